package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Driver-neutral benchmark bodies: every driver's benchmarks run these, so their numbers compare.

// benchPublish measures stored records per second from benchPublishers concurrent callers, perCall
// records per Publish call.
func benchPublish(b *testing.B, br Broker, topic TopicRef, perCall int) {
	value := make([]byte, benchValueBytes)
	publishInParallel(b, br, topic, perCall, func(n int64) Record {
		return Record{Partition: int(n % benchPartitions), Key: fmt.Sprintf("PF-%d", n%64), EventID: "e", Value: value}
	}, nil)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// publishInParallel publishes b.N records from benchPublishers concurrent callers, perCall records per
// Publish call, and resets the timer first. record builds the nth record (from 1); beforePublish, when
// set, sees each call's records just before the call.
func publishInParallel(b *testing.B, br Broker, topic TopicRef, perCall int, record func(n int64) Record, beforePublish func([]Record)) {
	var next atomic.Int64
	b.SetParallelism(benchPublishers / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		records := make([]Record, 0, perCall)
		flush := func() {
			if beforePublish != nil {
				beforePublish(records)
			}
			if err := br.Publish(ctx, topic, records); err != nil {
				b.Error(err)
			}
			records = records[:0]
		}
		for pb.Next() {
			if records = append(records, record(next.Add(1))); len(records) == perCall {
				flush()
			}
		}
		if len(records) > 0 {
			flush()
		}
	})
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
	publishInParallel(b, br, topic, perCall, func(n int64) Record {
		return Record{Partition: int(n % benchPartitions), Key: fmt.Sprintf("PF-%d", n%64), EventID: "e", Value: make([]byte, benchValueBytes)}
	}, func(records []Record) {
		now := uint64(time.Now().UnixNano())
		for _, r := range records {
			binary.BigEndian.PutUint64(r.Value, now)
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

// benchWorkflows is how many subscriptions benchRouting spreads the records over, one workflow each.
const benchWorkflows = 10

// benchRouting measures records per second and process CPU per record from publish until every
// subscription has received what it wants, with benchWorkflows subscriptions of one topic and each record
// meant for one of them. routed: records carry their target workflow and consumers their workflow, so a
// driver that routes hands each consumer only its records. Not routed: the behaviour before routing,
// every consumer reads every record (and would drop those for other workflows after decoding them).
func benchRouting(b *testing.B, br Broker, routed bool) {
	const partitions, perCall = 16, 100
	topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "bench", Partitions: partitions}
	ctx := context.Background()
	if err := br.EnsureTopic(ctx, topic); err != nil {
		b.Fatal(err)
	}
	targets := make([][]string, benchWorkflows)
	for k := range targets {
		targets[k] = []string{fmt.Sprintf("wf-%d", k)}
	}
	var deliveries atomic.Int64
	done := make(chan struct{}, benchWorkflows)
	for k := range benchWorkflows {
		sub := SubscriptionRef{TenantID: conformanceTenant, ID: uuid.NewString(), Topic: topic}
		want := b.N
		if routed {
			sub.Workflow = targets[k][0]
			// Records are numbered 1..b.N and record n targets workflow n % benchWorkflows.
			want = b.N / benchWorkflows
			if k != 0 && k <= b.N%benchWorkflows {
				want++
			}
		}
		c, err := br.Subscribe(ctx, sub, ConsumerOptions{MaxUnacked: 10000})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		go func() {
			defer func() { done <- struct{}{} }()
			for received := 0; received < want; {
				batch, err := c.Receive(ctx, 2000)
				if err != nil {
					b.Error(err)
					return
				}
				received += len(batch)
				deliveries.Add(int64(len(batch)))
				if err := c.Ack(ctx, handles(batch)...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	value := make([]byte, benchValueBytes)
	cpuBefore := processCPU()
	publishInParallel(b, br, topic, perCall, func(n int64) Record {
		r := Record{Partition: int(n % partitions), Key: fmt.Sprintf("PF-%d", n%1000), EventID: "e", Value: value}
		if routed {
			r.TargetWorkflows = targets[n%benchWorkflows]
		}
		return r
	}, nil)
	for range benchWorkflows {
		<-done
	}
	b.StopTimer()
	cpu := processCPU() - cpuBefore
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
	b.ReportMetric(float64(deliveries.Load())/float64(b.N), "reads/event")
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
