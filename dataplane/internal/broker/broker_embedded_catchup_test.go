package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkEmbeddedCatchUp measures how fast a new subscription reads a backlog stored before it existed
// (so from the engine's store, not from records this process just wrote), in engine messages of 10 and of
// 200 records: each iteration drains the whole backlog with a new subscription, acknowledging as it goes.
//
//	go test -run '^$' -bench EmbeddedCatchUp ./internal/broker/
func BenchmarkEmbeddedCatchUp(b *testing.B) {
	const backlog = 20000
	for _, perFrame := range []int{10, 200} {
		b.Run(fmt.Sprintf("records-per-message=%d", perFrame), func(b *testing.B) {
			br := openEmbeddedForTest(b, b.TempDir(), EmbeddedOptions{SyncInterval: time.Minute})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "catch-up", Partitions: benchPartitions}
			if err := br.EnsureTopic(ctx, topic); err != nil {
				b.Fatal(err)
			}
			value := make([]byte, benchValueBytes)
			records := make([]Record, perFrame)
			for n := 0; n < backlog; n += perFrame {
				for i := range records {
					records[i] = Record{Partition: (n + i) % benchPartitions, Key: fmt.Sprintf("PF-%d", (n+i)%64), EventID: "e", Value: value}
				}
				// One call at a time: each call is one engine message.
				if err := br.Publish(ctx, topic, records); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				c, err := br.Subscribe(ctx, SubscriptionRef{TenantID: conformanceTenant, ID: uuid.NewString(), Topic: topic}, ConsumerOptions{})
				if err != nil {
					b.Fatal(err)
				}
				for got := 0; got < backlog; {
					batch, err := c.Receive(ctx, 1000)
					if err != nil {
						b.Fatalf("Receive after %d of %d records: %v", got, backlog, err)
					}
					handles := make([]AckHandle, len(batch))
					for i, d := range batch {
						handles[i] = d.Handle
					}
					if err := c.Ack(ctx, handles...); err != nil {
						b.Fatal(err)
					}
					got += len(batch)
				}
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(backlog)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
