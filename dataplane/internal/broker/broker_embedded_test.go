package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func openEmbeddedForTest(t testing.TB, dir string, opts EmbeddedOptions) *EmbeddedBroker {
	t.Helper()
	opts.Dir = dir
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, err := OpenEmbedded(ctx, opts)
	if err != nil {
		t.Fatalf("OpenEmbedded(%s): %v", dir, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestEmbeddedConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts many in-process JetStream servers")
	}
	t.Parallel()
	dirs := sync.Map{} // Broker -> its Dir, for reopen
	runConformance(t, conformanceDriver{
		newBroker: func(t *testing.T) Broker {
			dir := t.TempDir()
			b := openEmbeddedForTest(t, dir, EmbeddedOptions{})
			dirs.Store(b, dir)
			return b
		},
		reopen: func(t *testing.T, old Broker) Broker {
			dir, ok := dirs.Load(old)
			if !ok {
				t.Fatal("reopen of a broker the suite did not open")
			}
			if err := old.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			b := openEmbeddedForTest(t, dir.(string), EmbeddedOptions{})
			dirs.Store(b, dir)
			return b
		},
	})
}

func TestBatchFrameRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		records []Record
	}{
		{"no records", nil},
		{"one empty record", []Record{{}}},
		{"several records", []Record{
			{Partition: 3, Key: "pf-1.state.update", EventID: "0192-1", Value: []byte(`{"a":1}`)},
			{Partition: 0, Key: "", EventID: "x", Value: nil},
			{Partition: 1000, Key: strings.Repeat("k", 300), EventID: "big", Value: make([]byte, 70000)},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			frame := newBatchFrame(0)
			for i := range tc.records {
				frame = appendRecord(frame, &tc.records[i])
			}
			sealBatchFrame(frame, len(tc.records))
			got, err := decodeBatchFrame(frame)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(got) != len(tc.records) {
				t.Fatalf("decoded %d records, want %d", len(got), len(tc.records))
			}
			for i, r := range got {
				w := tc.records[i]
				if r.Partition != w.Partition || r.Key != w.Key || r.EventID != w.EventID || string(r.Value) != string(w.Value) {
					t.Errorf("record %d changed in the round trip", i)
				}
			}
			if _, err := decodeBatchFrame(frame[:len(frame)-1]); len(tc.records) > 0 && err == nil {
				t.Error("a truncated frame decoded without error")
			}
		})
	}
}

func TestEngineNamesAreValidAndDistinct(t *testing.T) {
	t.Parallel()
	inputs := []string{"00000000-0000-0000-0000-000000000001", "a.b", "a_b", "a b", "a*b", "", strings.Repeat("x", 100)}
	seen := map[string]string{}
	for _, in := range inputs {
		out := engineToken(in)
		for _, r := range out {
			if !isEngineRune(r) {
				t.Errorf("engineToken(%q) = %q holds %q", in, out, r)
			}
		}
		if prev, dup := seen[out]; dup {
			t.Errorf("engineToken(%q) and engineToken(%q) are both %q", in, prev, out)
		}
		seen[out] = in
	}
	keys := map[string]bool{}
	for _, pair := range [][2]string{{"state", "a.b"}, {"state.a", "b"}, {"state", "a=2Eb"}, {"", ""}, {"state", ""}} {
		k := latestKey(pair[0], pair[1])
		if keys[k] || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") {
			t.Errorf("latestKey(%q, %q) = %q is a duplicate or has an empty token", pair[0], pair[1], k)
		}
		keys[k] = true
	}
}

// Environment of the child process of TestEmbeddedSurvivesSIGKILL.
const (
	crashChildDirEnv   = "PDS_BROKER_CRASH_CHILD_DIR"
	crashChildTopicEnv = "PDS_BROKER_CRASH_CHILD_TOPIC"
)

// TestEmbeddedSurvivesSIGKILL kills a real process that is publishing, then checks that every record whose
// Publish returned nil before the kill is delivered from the same Dir.
func TestEmbeddedSurvivesSIGKILL(t *testing.T) {
	if dir := os.Getenv(crashChildDirEnv); dir != "" {
		runCrashChild(dir, os.Getenv(crashChildTopicEnv))
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	t.Parallel()
	dir := t.TempDir()
	topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "crash", Partitions: 4}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedSurvivesSIGKILL$")
	cmd.Env = append(os.Environ(), crashChildDirEnv+"="+dir, crashChildTopicEnv+"="+topic.ID)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	stored := map[string]bool{}
	lines := bufio.NewScanner(stdout)
	killed := false
	for lines.Scan() {
		id, ok := strings.CutPrefix(lines.Text(), "stored ")
		if !ok {
			continue
		}
		stored[id] = true
		// Kill mid-stream: the child is still publishing from many goroutines.
		if len(stored) == 500 && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("SIGKILL child: %v", err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("child exited after %d stored records, before it could be killed", len(stored))
	}

	b := openEmbeddedForTest(t, dir, EmbeddedOptions{})
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{MaxUnacked: 10000})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	missing := len(stored)
	for missing > 0 {
		batch, err := c.Receive(ctx, 1000)
		if err != nil {
			t.Fatalf("after SIGKILL, %d of %d records acknowledged to the publisher were not delivered: %v", missing, len(stored), err)
		}
		_ = c.Ack(ctx, handles(batch)...)
		for _, dl := range batch {
			if stored[dl.EventID] {
				stored[dl.EventID] = false
				missing--
			}
		}
	}
}

func runCrashChild(dir, topicID string) {
	ctx := context.Background()
	b, err := OpenEmbedded(ctx, EmbeddedOptions{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash child: open:", err)
		os.Exit(2)
	}
	topic := TopicRef{TenantID: conformanceTenant, ID: topicID, Name: "crash", Partitions: 4}
	if err := b.EnsureTopic(ctx, topic); err != nil {
		fmt.Fprintln(os.Stderr, "crash child: ensure topic:", err)
		os.Exit(2)
	}
	var out sync.Mutex
	for g := range 16 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("crash-%d-%d", g, i)
				rec := Record{Partition: i % 4, Key: fmt.Sprintf("k%d", g), EventID: id, Value: []byte(id)}
				if err := b.Publish(ctx, topic, []Record{rec}); err != nil {
					continue
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "stored %s\n", id) // unbuffered: the parent sees it at once
				out.Unlock()
			}
		}()
	}
	select {} // until killed
}

// Benchmark settings shared by the embedded benchmarks.
const (
	benchPartitions = 8
	benchValueBytes = 256
	benchPublishers = 64 // concurrent Publish calls, as many producer requests would make
)

var benchSyncModes = []struct {
	name     string
	interval time.Duration
}{
	{"fsync=every-write", 0},
	{"fsync=every-2m", 2 * time.Minute},
}

// BenchmarkEmbeddedPublish measures stored records per second from benchPublishers concurrent callers,
// with one record per Publish call (many small producer requests) and with 100 (batched producers).
func BenchmarkEmbeddedPublish(b *testing.B) {
	for _, mode := range benchSyncModes {
		for _, perCall := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/records-per-call=%d", mode.name, perCall), func(b *testing.B) {
				br := openEmbeddedForTest(b, b.TempDir(), EmbeddedOptions{SyncInterval: mode.interval})
				topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "bench", Partitions: benchPartitions}
				if err := br.EnsureTopic(context.Background(), topic); err != nil {
					b.Fatal(err)
				}
				benchPublish(b, br, topic, perCall)
			})
		}
	}
}

// BenchmarkEmbeddedPublishReceive measures records per second through Publish, Receive and Ack, and the
// publish-to-receive latency (from before Publish to Receive returning), at saturation: benchPublishers
// callers publishing as fast as Publish returns, one consumer receiving and acking.
func BenchmarkEmbeddedPublishReceive(b *testing.B) {
	for _, mode := range benchSyncModes {
		for _, perCall := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/records-per-call=%d", mode.name, perCall), func(b *testing.B) {
				br := openEmbeddedForTest(b, b.TempDir(), EmbeddedOptions{SyncInterval: mode.interval})
				benchBrokerPublishReceive(b, br, perCall)
			})
		}
	}
}

func TestEmbeddedReceiveReportsDeletedSubscription(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	cases := []struct {
		name   string
		delete func(b Broker, sub SubscriptionRef) error
	}{
		{"subscription deleted", func(b Broker, sub SubscriptionRef) error { return b.DeleteSubscription(context.Background(), sub) }},
		{"topic deleted", func(b Broker, sub SubscriptionRef) error { return b.DeleteTopic(context.Background(), sub.Topic) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
			sub := newSubscription(newTopic(t, b, 1))
			c := subscribe(t, b, sub, ConsumerOptions{})
			received := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				for {
					if _, err := c.Receive(ctx, 1); err != nil {
						received <- err
						return
					}
				}
			}()
			if err := tc.delete(b, sub); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if err := <-received; !errors.Is(err, ErrSubscriptionGone) {
				t.Fatalf("Receive on a consumer whose subscription is gone: got %v, want ErrSubscriptionGone", err)
			}
		})
	}
}
