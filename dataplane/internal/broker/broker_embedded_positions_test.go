package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// publishOneByOne publishes each record in its own call, so each is its own engine message and its own
// step of the acknowledgement floor.
func publishOneByOne(t *testing.T, b Broker, topic TopicRef, records []Record) {
	t.Helper()
	for i := range records {
		publish(t, b, topic, records[i:i+1])
	}
}

// savedResume is what the positions file in dir says about key (0 when nothing).
func savedResume(t *testing.T, dir, key string) uint64 {
	t.Helper()
	p, err := loadPositions(dir)
	if err != nil {
		t.Fatalf("loadPositions: %v", err)
	}
	seq, _ := p.get(key)
	return seq
}

func consumerKey(sub SubscriptionRef) string {
	return topicNames(sub.Topic).stream + "/" + consumerName(sub)
}

// Subscriptions are read by PDS's own cursors: the engine keeps no consumer for them, in memory or in files.
func TestEmbeddedSubscriptionsUseNoEngineConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	dir := t.TempDir()
	b := openEmbeddedForTest(t, dir, EmbeddedOptions{PositionInterval: 20 * time.Millisecond})
	topic := newTopic(t, b, 2)
	sub := newSubscription(topic)
	c := subscribe(t, b, sub, ConsumerOptions{})
	publishOneByOne(t, b, topic, makeRecords("state", 5, 2))
	receiveN(t, c, 5, true)

	// All five acknowledged: the consumer resumes after the fifth engine message.
	deadline := time.Now().Add(waitTimeout)
	for savedResume(t, dir, consumerKey(sub)) != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("saved resume position is %d, want 6 once all 5 messages are acknowledged", savedResume(t, dir, consumerKey(sub)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := b.js.Stream(ctx, topicNames(topic).stream)
	if err != nil {
		t.Fatal(err)
	}
	if n := stream.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("the engine keeps %d consumers for the topic, want none", n)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(path, consumerName(sub)) {
			t.Errorf("the engine keeps a file for the consumer: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Environment of the child process of TestEmbeddedResumesFromTheSavedPositionAfterSIGKILL.
const (
	resumeChildDirEnv = "PDS_BROKER_RESUME_CHILD_DIR"
	resumeChildSubEnv = "PDS_BROKER_RESUME_CHILD_SUB"
)

// TestEmbeddedResumesFromTheSavedPositionAfterSIGKILL kills a process whose subscription acknowledged half
// of its records once the position was saved, then checks that the other half, and only it, comes again.
func TestEmbeddedResumesFromTheSavedPositionAfterSIGKILL(t *testing.T) {
	if dir := os.Getenv(resumeChildDirEnv); dir != "" {
		runResumeChild(t, dir, os.Getenv(resumeChildSubEnv))
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	t.Parallel()
	dir := t.TempDir()
	subID := uuid.NewString()
	cmd, stdout := startChildTest(t, resumeChildDirEnv+"="+dir, resumeChildSubEnv+"="+subID)
	lines := bufio.NewScanner(stdout)
	ready := false
	for !ready && lines.Scan() {
		ready = lines.Text() == "ready"
	}
	if !ready {
		t.Fatal("the child ended before its position was saved (its output is above)")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL child: %v", err)
	}
	_ = cmd.Wait()

	b := openEmbeddedForTest(t, dir, EmbeddedOptions{})
	c := subscribe(t, b, resumeChildSubscription(subID), ConsumerOptions{})
	records := makeRecords("resume", 20, 2)
	assertSameIDs(t, "records delivered after the restart", eventIDs(receiveN(t, c, 10, true)), sortedIDs(records[10:]))
	expectNoDelivery(t, c, 500*time.Millisecond)
}

func resumeChildSubscription(subID string) SubscriptionRef {
	topic := TopicRef{TenantID: conformanceTenant, ID: "resume-topic", Name: "resume", Partitions: 2}
	return SubscriptionRef{TenantID: conformanceTenant, ID: subID, Topic: topic}
}

// runResumeChild publishes 20 records, acknowledges the first 10, prints "ready" once the position after
// them is saved, and waits to be killed.
func runResumeChild(t *testing.T, dir, subID string) {
	b := openEmbeddedForTest(t, dir, EmbeddedOptions{PositionInterval: 20 * time.Millisecond})
	sub := resumeChildSubscription(subID)
	if err := b.EnsureTopic(context.Background(), sub.Topic); err != nil {
		t.Fatalf("EnsureTopic: %v", err)
	}
	c := subscribe(t, b, sub, ConsumerOptions{})
	publishOneByOne(t, b, sub.Topic, makeRecords("resume", 20, 2))
	got := receiveN(t, c, 20, false)
	var acked []Delivery
	var lastSeq uint64
	for _, d := range got {
		if n, _ := strconv.Atoi(strings.TrimPrefix(d.EventID, "resume-")); n < 10 {
			acked = append(acked, d)
			seq, _, _ := parseAckToken(d.Handle.Token)
			lastSeq = max(lastSeq, seq)
		}
	}
	if len(acked) != 10 {
		t.Fatalf("picked %d records to acknowledge, want 10", len(acked))
	}
	if err := c.Ack(context.Background(), handles(acked)...); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	deadline := time.Now().Add(waitTimeout)
	for savedResume(t, dir, consumerKey(sub)) != lastSeq+1 {
		if time.Now().After(deadline) {
			t.Fatalf("saved resume position is %d, want %d once the first 10 records are acknowledged", savedResume(t, dir, consumerKey(sub)), lastSeq+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("ready")
	select {} // until killed
}

// storedForOneSubscription opens a broker in a new directory, publishes n records (one engine message
// each) to a new topic and returns them with a subscription of that topic nothing has consumed yet.
func storedForOneSubscription(t *testing.T, prefix string, n int) (dir string, b *EmbeddedBroker, sub SubscriptionRef, records []Record) {
	t.Helper()
	dir = t.TempDir()
	b = openEmbeddedForTest(t, dir, EmbeddedOptions{})
	topic := newTopic(t, b, 2)
	records = makeRecords(prefix, n, 2)
	publishOneByOne(t, b, topic, records)
	return dir, b, newSubscription(topic), records
}

// TestEmbeddedTakesOverAnEarlierVersionsConsumer subscribes to a subscription for which an earlier build
// kept a JetStream consumer (builds before 2026-11-29 kept its state in files) and checks that the
// subscription resumes after what that consumer had acknowledged, and that the consumer is gone.
func TestEmbeddedTakesOverAnEarlierVersionsConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	dir, b, sub, records := storedForOneSubscription(t, "earlier", 10)
	topic := sub.Topic

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	names := topicNames(topic)
	old, err := b.js.CreateConsumer(ctx, names.stream, jetstream.ConsumerConfig{
		Durable:       consumerName(sub),
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatalf("create an earlier version's consumer: %v", err)
	}
	batch, err := old.Fetch(5, jetstream.FetchMaxWait(waitTimeout))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		n++
	}
	if n != 5 {
		t.Fatalf("fetched %d messages from the old consumer, want 5", n)
	}

	c := subscribe(t, b, sub, ConsumerOptions{})
	if got := savedResume(t, dir, consumerKey(sub)); got != 6 {
		t.Errorf("saved position after the take-over = %d, want 6 (after the 5 acknowledged messages)", got)
	}
	if _, err := b.js.Consumer(ctx, names.stream, consumerName(sub)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the earlier version's consumer after the take-over: %v, want ErrConsumerNotFound", err)
	}
	assertSameIDs(t, "records delivered after the take-over", eventIDs(receiveN(t, c, 5, true)), sortedIDs(records[5:]))
	expectNoDelivery(t, c, 300*time.Millisecond)
}

// A positions file newer than the stream it describes (a data directory restored from an older backup)
// must not make a subscription skip records: it starts over instead.
func TestEmbeddedIgnoresAPositionBeyondTheStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	dir, b, sub, records := storedForOneSubscription(t, "restored", 3)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	p, err := loadPositions(dir)
	if err != nil {
		t.Fatal(err)
	}
	p.set(consumerKey(sub), 1000)
	if err := p.save(); err != nil {
		t.Fatal(err)
	}

	b = openEmbeddedForTest(t, dir, EmbeddedOptions{})
	c := subscribe(t, b, sub, ConsumerOptions{})
	assertSameIDs(t, "records delivered with a position beyond the stream", eventIDs(receiveN(t, c, 3, true)), sortedIDs(records))
}

func TestEmbeddedRefusesUnreadablePositions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, positionsFile), []byte(`{"version":1,"resume":`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenEmbedded(context.Background(), EmbeddedOptions{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), positionsFile) || !strings.Contains(err.Error(), "remove the file") {
		t.Fatalf("OpenEmbedded with a truncated positions file: %v; want an error naming the file and what to do", err)
	}
}

func TestPositionBookSavesConcurrentlyInOrder(t *testing.T) {
	dir := t.TempDir()
	p, err := loadPositions(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				p.set(fmt.Sprintf("stream/consumer-%d", g), uint64(i+1))
				if err := p.save(); err != nil {
					t.Errorf("save: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	for g := range 8 {
		if got := savedResume(t, dir, fmt.Sprintf("stream/consumer-%d", g)); got != 50 {
			t.Errorf("consumer-%d: saved %d, want its last value 50", g, got)
		}
	}
}
