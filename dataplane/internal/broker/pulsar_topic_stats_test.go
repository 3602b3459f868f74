package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
)

func TestTopicStatsReadsShareOneRead(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	release := make(chan struct{})
	s := newTopicStatsReads(func(_ context.Context, topic string) (utils.PartitionedTopicStats, error) {
		calls.Add(1)
		<-release
		return utils.PartitionedTopicStats{Metadata: utils.PartitionedTopicMetadata{Partitions: len(topic)}}, nil
	})
	const callers = 20
	var wg sync.WaitGroup
	results := make(chan int, callers)
	for range callers {
		wg.Go(func() {
			stats, err := s.get(context.Background(), "t-1")
			if err != nil {
				t.Errorf("get: %v", err)
			}
			results <- stats.Metadata.Partitions
		})
	}
	// Let every caller find the read in flight before it finishes.
	for deadline := time.Now().Add(5 * time.Second); calls.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(results)
	for got := range results {
		if got != len("t-1") {
			t.Errorf("a caller got the stats of another read: partitions %d", got)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d callers at once made %d reads, want 1", callers, n)
	}
	if _, err := s.get(context.Background(), "t-22"); err != nil {
		t.Fatalf("get another topic: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("another topic's stats came from %d reads in all, want 2", n)
	}
}

func TestTopicStatsReadsReadAgainWhenOldOrFailed(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	failNext := atomic.Bool{}
	s := newTopicStatsReads(func(context.Context, string) (utils.PartitionedTopicStats, error) {
		calls.Add(1)
		if failNext.Swap(false) {
			return utils.PartitionedTopicStats{}, errors.New("admin API unavailable")
		}
		return utils.PartitionedTopicStats{}, nil
	})
	ctx := context.Background()
	failNext.Store(true)
	if _, err := s.get(ctx, "t"); err == nil {
		t.Fatal("get returned no error from a failed read")
	}
	if _, err := s.get(ctx, "t"); err != nil {
		t.Fatalf("get after a failed read: %v", err)
	}
	if _, err := s.get(ctx, "t"); err != nil {
		t.Fatalf("get: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("failed read, then two gets: %d reads, want 2 (the failure not reused, the success reused)", n)
	}
	time.Sleep(statsMaxAge + 50*time.Millisecond)
	if _, err := s.get(ctx, "t"); err != nil {
		t.Fatalf("get: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("get after statsMaxAge: %d reads, want 3 (an old read is not reused)", n)
	}
	s.mu.Lock()
	kept := len(s.reads)
	s.mu.Unlock()
	if kept != 1 {
		t.Errorf("%d reads kept, want 1", kept)
	}
}
