package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Driver-neutral benchmark bodies: every driver's benchmarks run these, so their numbers compare.

// benchPublish measures stored records per second from benchPublishers concurrent callers, perCall
// records per Publish call.
func benchPublish(b *testing.B, br Broker, topic TopicRef, perCall int) {
	var next atomic.Int64
	value := make([]byte, benchValueBytes)
	b.SetParallelism(benchPublishers / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		records := make([]Record, 0, perCall)
		flush := func() {
			if err := br.Publish(ctx, topic, records); err != nil {
				b.Error(err)
			}
			records = records[:0]
		}
		for pb.Next() {
			n := next.Add(1)
			records = append(records, Record{Partition: int(n % benchPartitions), Key: fmt.Sprintf("PF-%d", n%64), EventID: "e", Value: value})
			if len(records) == perCall {
				flush()
			}
		}
		if len(records) > 0 {
			flush()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func benchBrokerPublishReceive(b *testing.B, br Broker, perCall int) {
	topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "bench", Partitions: benchPartitions}
	ctx := context.Background()
	if err := br.EnsureTopic(ctx, topic); err != nil {
		b.Fatal(err)
	}
	c, err := br.Subscribe(ctx, SubscriptionRef{TenantID: conformanceTenant, ID: uuid.NewString(), Topic: topic}, ConsumerOptions{MaxUnacked: 10000})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	latencies := make([]time.Duration, 0, b.N)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for len(latencies) < b.N {
			batch, err := c.Receive(ctx, 2000)
			if err != nil {
				b.Error(err)
				return
			}
			now := time.Now()
			for _, dl := range batch {
				latencies = append(latencies, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(dl.Value)))))
			}
			if err := c.Ack(ctx, handles(batch)...); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	var next atomic.Int64
	b.SetParallelism(benchPublishers / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		records := make([]Record, 0, perCall)
		flush := func() {
			now := uint64(time.Now().UnixNano())
			for _, r := range records {
				binary.BigEndian.PutUint64(r.Value, now)
			}
			if err := br.Publish(ctx, topic, records); err != nil {
				b.Error(err)
			}
			records = records[:0]
		}
		for pb.Next() {
			n := next.Add(1)
			records = append(records, Record{Partition: int(n % benchPartitions), Key: fmt.Sprintf("PF-%d", n%64), EventID: "e", Value: make([]byte, benchValueBytes)})
			if len(records) == perCall {
				flush()
			}
		}
		if len(records) > 0 {
			flush()
		}
	})
	<-received
	b.StopTimer()
	reportLatencies(b, latencies)
}

func reportLatencies(b *testing.B, latencies []time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if len(latencies) > 0 {
		slices.Sort(latencies)
		b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	}
}
