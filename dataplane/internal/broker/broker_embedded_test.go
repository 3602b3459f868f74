package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
		routesByWorkflow: true,
	})
}

func TestBatchFrameRoundTrip(t *testing.T) {
	t.Parallel()
	records := []Record{
		{Partition: 3, Key: "pf-1.state.update", EventID: "broadcast", Value: []byte(`{"a":1}`)},
		{Partition: 0, Key: "", EventID: "for-a", Value: nil, TargetWorkflows: []string{"wf-a"}},
		{Partition: 1000, Key: strings.Repeat("k", 300), EventID: "for-a-and-b", Value: make([]byte, 70000), TargetWorkflows: []string{"wf-b", "wf-a"}},
		{Partition: 2, Key: "k", EventID: "for-b", Value: []byte("v"), TargetWorkflows: []string{"wf-b"}},
		{},
	}
	cases := []struct {
		name    string
		records []Record
		sel     recordSelector
		want    []int // positions in records (and so in the frame) of the selected records
	}{
		{"no records", nil, recordSelector{}, nil},
		{"every record", records, recordSelector{}, []int{0, 1, 2, 3, 4}},
		{"records for wf-a", records, recordSelector{workflow: "wf-a"}, []int{0, 1, 2, 4}},
		{"records for wf-b", records, recordSelector{workflow: "wf-b"}, []int{0, 2, 3, 4}},
		{"records for a workflow nobody targets", records, recordSelector{workflow: "wf-c"}, []int{0, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			builder := newFrameBuilder(0)
			for i := range tc.records {
				builder.add(&tc.records[i])
			}
			frame := builder.seal()
			if bound := batchFrameOverhead + sumEncodedSizes(tc.records); bound < len(frame) {
				t.Errorf("size bound %d (batchFrameOverhead plus encodedRecordSize of each record), frame has %d bytes",
					bound, len(frame))
			}
			got, err := decodeBatchFrame(frame, tc.sel)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			assertSelected(t, got, tc.records, tc.want)
			if _, err := decodeBatchFrame(frame[:len(frame)-1], tc.sel); len(tc.records) > 0 && err == nil {
				t.Error("a truncated frame decoded without error")
			}
		})
	}
}

// A record that names a workflow twice is listed once; a consumer of that workflow gets it once.
func TestBatchFrameListsARecordOncePerWorkflow(t *testing.T) {
	t.Parallel()
	records := []Record{
		{EventID: "twice", TargetWorkflows: []string{"wf-a", "wf-a"}},
		{EventID: "other", TargetWorkflows: []string{"wf-b"}},
		{EventID: "again", TargetWorkflows: []string{"wf-a", "wf-b", "wf-a"}},
	}
	builder := newFrameBuilder(0)
	for i := range records {
		builder.add(&records[i])
	}
	got, err := decodeBatchFrame(builder.seal(), recordSelector{workflow: "wf-a"})
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	assertSelected(t, got, records, []int{0, 2})
}

// Corrupting any byte of a frame's index or trailer makes decoding fail, or select distinct records of the
// frame; it never reads outside the frame.
func TestBatchFrameSurvivesACorruptIndex(t *testing.T) {
	t.Parallel()
	records := []Record{
		{Partition: 3, Key: "pf-1", EventID: "broadcast", Value: []byte(`{"a":1}`)},
		{Partition: 1, Key: "pf-2", EventID: "for-a", Value: []byte("v"), TargetWorkflows: []string{"wf-a"}},
		{Partition: 2, Key: "pf-3", EventID: "for-a-and-b", Value: make([]byte, 300), TargetWorkflows: []string{"wf-b", "wf-a"}},
		{Partition: 0, Key: "pf-4", EventID: "for-b", Value: nil, TargetWorkflows: []string{"wf-b"}},
	}
	builder := newFrameBuilder(0)
	for i := range records {
		builder.add(&records[i])
	}
	frame := builder.seal()
	indexStart := len(frame) - batchFrameTrailerSize - int(binary.BigEndian.Uint32(frame[len(frame)-batchFrameTrailerSize:]))
	for pos := indexStart; pos < len(frame); pos++ {
		for _, flip := range []byte{0x01, 0x02, 0x80, 0xff} {
			bad := slices.Clone(frame)
			bad[pos] ^= flip
			for _, workflow := range []string{"", "wf-a", "wf-b"} {
				got, err := decodeBatchFrame(bad, recordSelector{workflow: workflow})
				if err != nil {
					continue
				}
				seen := map[int]bool{}
				for i := range got.records {
					at := got.frameIndex(i)
					if at < 0 || at >= len(records) || seen[at] {
						t.Fatalf("byte %d ^ %#x, workflow %q: selected record number %d twice or out of range", pos, flip, workflow, at)
					}
					seen[at] = true
				}
			}
		}
	}
}

// Frames written by earlier versions of the driver decode as they did.
func TestBatchFrameReadsEarlierVersions(t *testing.T) {
	t.Parallel()
	records := []Record{
		{Partition: 3, Key: "pf-1.state.update", EventID: "old-1", Value: []byte(`{"a":1}`)},
		{Partition: 0, Key: "", EventID: "old-2", Value: nil},
		{Partition: 7, Key: "k", EventID: "old-3", Value: []byte("v")},
	}
	copies := []bool{false, true, false}
	targets := [][]string{nil, {"wf-b"}, {"wf-a", "wf-b"}}
	cases := []struct {
		name  string
		frame []byte
		sel   recordSelector
		want  []int
	}{
		{"version 1", version1Frame(records), recordSelector{workflow: "wf-a", skipCopies: true}, []int{0, 1, 2}},
		{"version 2 with its copies", version2Frame(records, copies), recordSelector{}, []int{0, 1, 2}},
		{"version 2 without its copies", version2Frame(records, copies), recordSelector{skipCopies: true}, []int{0, 2}},
		{"version 3, every record", version3Frame(records, targets), recordSelector{}, []int{0, 1, 2}},
		{"version 3, records for wf-a", version3Frame(records, targets), recordSelector{workflow: "wf-a"}, []int{0, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeBatchFrame(tc.frame, tc.sel)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			assertSelected(t, got, records, tc.want)
			if _, err := decodeBatchFrame(tc.frame[:len(tc.frame)-1], tc.sel); err == nil {
				t.Error("a truncated frame decoded without error")
			}
		})
	}
}

func sumEncodedSizes(records []Record) int {
	size := 0
	for i := range records {
		size += encodedRecordSize(&records[i])
	}
	return size
}

// assertSelected checks that frame holds records[want[0]], records[want[1]], … with their frame positions.
func assertSelected(t *testing.T, frame decodedFrame, records []Record, want []int) {
	t.Helper()
	if frame.total != len(records) {
		t.Errorf("frame counts %d records, want %d", frame.total, len(records))
	}
	if len(frame.records) != len(want) {
		t.Fatalf("selected %d records, want %d", len(frame.records), len(want))
	}
	for i, r := range frame.records {
		if frame.frameIndex(i) != want[i] {
			t.Errorf("selected record %d sits at frame position %d, want %d", i, frame.frameIndex(i), want[i])
		}
		w := records[want[i]]
		if r.Partition != w.Partition || r.Key != w.Key || r.EventID != w.EventID || string(r.Value) != string(w.Value) {
			t.Errorf("record %d changed in the round trip", want[i])
		}
	}
}

// version1Frame encodes records as a version 1 frame, the format stored before records were routed by
// workflow.
func version1Frame(records []Record) []byte {
	return olderFrame(batchFrameVersion1, records, nil, nil)
}

// version2Frame encodes records as a version 2 frame, stored when each target workflow had a subject of its
// own; copies[i] flags record i as a copy (nil: none is).
func version2Frame(records []Record, copies []bool) []byte {
	return olderFrame(batchFrameVersion2, records, copies, nil)
}

// version3Frame encodes records as a version 3 frame, stored before frames had an index; targets[i] are
// record i's target workflows.
func version3Frame(records []Record, targets [][]string) []byte {
	return olderFrame(batchFrameVersion3, records, nil, targets)
}

func olderFrame(version byte, records []Record, copies []bool, targets [][]string) []byte {
	frame := make([]byte, batchFrameHeaderSize)
	frame[0] = version
	for i, r := range records {
		if version == batchFrameVersion2 {
			var flags byte
			if copies != nil && copies[i] {
				flags = recordCopy
			}
			frame = append(frame, flags)
		}
		frame = binary.AppendUvarint(frame, uint64(r.Partition))
		if version == batchFrameVersion3 {
			frame = binary.AppendUvarint(frame, uint64(len(targets[i])))
			for _, w := range targets[i] {
				frame = binary.AppendUvarint(frame, uint64(len(w)))
				frame = append(frame, w...)
			}
		}
		frame = binary.AppendUvarint(frame, uint64(len(r.Key)))
		frame = append(frame, r.Key...)
		frame = binary.AppendUvarint(frame, uint64(len(r.EventID)))
		frame = append(frame, r.EventID...)
		frame = binary.AppendUvarint(frame, uint64(len(r.Value)))
		frame = append(frame, r.Value...)
	}
	binary.BigEndian.PutUint32(frame[1:batchFrameHeaderSize], uint32(len(records)))
	return frame
}

func TestWorkflowSubjectsStayApart(t *testing.T) {
	t.Parallel()
	names := topicNames(TopicRef{TenantID: conformanceTenant, ID: uuid.NewString()})
	reserved := map[string]bool{names.topicSubject(): true, names.legacySubject(): true}
	seen := map[string]string{}
	for _, workflow := range []string{"", "all", "_all", "records", "w", "*", ">", "a.b", "a b", "a_b", "wf-00", strings.Repeat("x", 100)} {
		subject := names.workflowSubject(workflow)
		if reserved[subject] {
			t.Errorf("workflow %q is stored under the reserved subject %q", workflow, subject)
		}
		if prev, dup := seen[subject]; dup {
			t.Errorf("workflows %q and %q share subject %q", workflow, prev, subject)
		}
		seen[subject] = workflow
		if tokens := strings.Split(subject, "."); len(tokens) != 5 || strings.ContainsAny(tokens[4], "*> ") {
			t.Errorf("workflow %q: subject %q is not <prefix>.w.<one literal token>", workflow, subject)
		}
	}
}

// TestEmbeddedReadsRecordsStoredBeforeRouting writes a topic the way the driver did before records were
// routed by workflow (stream subjects "<prefix>.*", version 1 frames under "<prefix>.records", a durable
// consumer with no filter holding an unacknowledged record), then uses it with the routing driver.
func TestEmbeddedReadsRecordsStoredBeforeRouting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "legacy", Partitions: 2}
	names := topicNames(topic)
	if _, err := b.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: names.stream, Subjects: []string{names.subjectPrefix + ".*"}, Storage: jetstream.FileStorage,
		Metadata: map[string]string{metaPartitions: "2"},
	}); err != nil {
		t.Fatalf("create a stream the old way: %v", err)
	}
	legacy := makeRecords("legacy", 6, 2)
	if _, err := b.js.Publish(ctx, names.legacySubject(), version1Frame(legacy)); err != nil {
		t.Fatalf("write a version 1 frame: %v", err)
	}
	sub := newSubscription(topic)
	old := subscribe(t, b, sub, ConsumerOptions{AckDeadline: time.Minute})
	held := receiveN(t, old, len(legacy), false)
	if err := old.Ack(ctx, handles(held[:3])...); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Published before the topic is ensured again: the driver adds the workflow subjects itself.
	routed := routedRecords("routed", 8, 2, "wf-a", "wf-b")
	publish(t, b, topic, routed)
	if err := b.EnsureTopic(ctx, topic); err != nil {
		t.Fatalf("EnsureTopic of a stream made before routing: %v", err)
	}
	sub.Workflow = "wf-a"
	c := subscribe(t, b, sub, ConsumerOptions{AckDeadline: time.Minute})
	// The cursor is behind the routed records, so it reads them for its new workflow; the legacy records
	// it held unacknowledged come back.
	want := append(wantedBy(routed, "wf-a"), legacy[3:]...)
	got := receiveWanted(t, c, want)
	expectNoDelivery(t, c, 300*time.Millisecond)
	var sortedHeld []string
	for _, dl := range held[3:] {
		sortedHeld = append(sortedHeld, dl.EventID)
	}
	wantIDs := append(sortedIDs(wantedBy(routed, "wf-a")), sortedHeld...)
	sort.Strings(wantIDs)
	assertSameIDs(t, "records for wf-a after the upgrade", eventIDs(got), wantIDs)
	assertWorkflow(t, b, sub, "wf-a")
}

// TestEmbeddedReadsWorkflowSubjectsOfFrameVersion2 writes a topic the way the driver did with frame version
// 2 (a record stored under the subject of each workflow it targets, flagged as a copy after the first;
// untargeted records under the topic subject), then publishes with the current driver: each subscription
// reads every record meant for it once, old and new.
func TestEmbeddedReadsWorkflowSubjectsOfFrameVersion2(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	topic := newTopic(t, b, 2)
	names := topicNames(topic)
	old := []Record{
		{Partition: 0, Key: "k0", EventID: "old-broadcast", Value: []byte("{}")},
		{Partition: 1, Key: "k1", EventID: "old-a", Value: []byte("{}"), TargetWorkflows: []string{"wf-a"}},
		{Partition: 0, Key: "k0", EventID: "old-a-b", Value: []byte("{}"), TargetWorkflows: []string{"wf-a", "wf-b"}},
		{Partition: 1, Key: "k1", EventID: "old-b", Value: []byte("{}"), TargetWorkflows: []string{"wf-b"}},
	}
	frames := []struct {
		subject string
		frame   []byte
	}{
		{names.topicSubject(), version2Frame(old[:1], nil)},
		{names.workflowSubject("wf-a"), version2Frame(old[1:3], nil)},
		{names.workflowSubject("wf-b"), version2Frame(old[2:4], []bool{true, false})},
	}
	for _, f := range frames {
		if _, err := b.js.Publish(ctx, f.subject, f.frame); err != nil {
			t.Fatalf("write a version 2 frame under %s: %v", f.subject, err)
		}
	}
	current := routedRecords("new", 8, 2, "wf-a", "wf-b")
	publish(t, b, topic, current)
	all := append(slices.Clone(old), current...)
	for _, workflow := range []string{"wf-a", "wf-b", ""} {
		sub := newSubscription(topic)
		sub.Workflow = workflow
		c := subscribe(t, b, sub, ConsumerOptions{})
		want := wantedBy(all, workflow)
		got := append(receiveWanted(t, c, want), drain(t, c, 300*time.Millisecond)...)
		assertSameIDs(t, fmt.Sprintf("records for workflow %q", workflow), eventIDs(got), sortedIDs(want))
	}
}

// A batch written by a later version of PDS (an earlier build run on its data) is neither delivered nor
// dropped: the subscription resumes at it, for that version, and the records after it still flow.
func TestEmbeddedKeepsBatchesOfALaterVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	topic := newTopic(t, b, 2)
	later := newFrameBuilder(0)
	later.add(&Record{Partition: 0, Key: "k0", EventID: "from-the-future", Value: []byte("{}")})
	frame := later.seal()
	frame[0] = batchFrameVersion + 1
	ack, err := b.js.Publish(ctx, topicNames(topic).topicSubject(), frame)
	if err != nil {
		t.Fatalf("write a frame of a later version: %v", err)
	}
	current := routedRecords("now", 8, 2, "wf-a", "wf-b")
	publish(t, b, topic, current)

	sub := newSubscription(topic)
	sub.Workflow = "wf-a"
	c := subscribe(t, b, sub, ConsumerOptions{})
	want := wantedBy(current, "wf-a")
	got := append(receiveWanted(t, c, want), drain(t, c, 300*time.Millisecond)...)
	assertSameIDs(t, "records after the later version's batch", eventIDs(got), sortedIDs(want))

	if err := b.checkpointPositions(); err != nil {
		t.Fatal(err)
	}
	if resume, _ := b.positions.get(consumerKey(sub)); resume != ack.Sequence {
		t.Fatalf("the subscription resumes at %d, want the later version's batch (%d): it was acknowledged or dropped",
			resume, ack.Sequence)
	}
}

func TestEmbeddedReattachWithAnotherWorkflowChangesWhatIsRead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	cases := []struct {
		name     string
		from, to string
	}{
		{"workflow to workflow", "wf-a", "wf-b"},
		{"workflow to none", "wf-a", ""},
		{"none to workflow", "", "wf-b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
			topic := newTopic(t, b, 2)
			sub := newSubscription(topic)
			sub.Workflow = tc.from
			first := subscribe(t, b, sub, ConsumerOptions{})
			before := routedRecords("before", 8, 2, "wf-a", "wf-b")
			publish(t, b, topic, before)
			receiveWanted(t, first, wantedBy(before, tc.from))
			if err := first.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			assertWorkflow(t, b, sub, tc.from)

			sub.Workflow = tc.to
			second := subscribe(t, b, sub, ConsumerOptions{})
			assertWorkflow(t, b, sub, tc.to)
			after := routedRecords("after", 8, 2, "wf-a", "wf-b")
			publish(t, b, topic, after)
			wanted := wantedBy(after, tc.to)
			got := append(receiveWanted(t, second, wanted), drain(t, second, 300*time.Millisecond)...)
			// Records stored before the change that the old workflow left out may still come, when the
			// cursor had not read them yet; nothing else may.
			allowed := map[string]bool{}
			for _, r := range append(wanted, wantedBy(before, tc.to)...) {
				allowed[r.EventID] = true
			}
			seen := map[string]bool{}
			for _, dl := range got {
				if !allowed[dl.EventID] || seen[dl.EventID] {
					t.Errorf("after the workflow changed to %q: got %s, not meant for it or a duplicate", tc.to, dl.EventID)
				}
				seen[dl.EventID] = true
			}
		})
	}
}

// drain receives and acks whatever c delivers within d.
func drain(t *testing.T, c Consumer, d time.Duration) []Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got []Delivery
	for {
		batch, err := c.Receive(ctx, 100)
		if errors.Is(err, context.DeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		_ = c.Ack(ctx, handles(batch)...)
		got = append(got, batch...)
	}
}

func assertWorkflow(t *testing.T, b *EmbeddedBroker, sub SubscriptionRef, want string) {
	t.Helper()
	b.mu.Lock()
	cur := b.cursors[consumerKey(sub)]
	b.mu.Unlock()
	if cur == nil {
		t.Fatalf("no cursor for subscription %s", sub.ID)
	}
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if cur.workflow != want {
		t.Fatalf("cursor reads workflow %q, want %q", cur.workflow, want)
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
	cmd, stdout := startChildTest(t, crashChildDirEnv+"="+dir, crashChildTopicEnv+"="+topic.ID)

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

// startChildTest runs the calling test again in a child process with the extra environment, which tells
// the test to play the child's part; the child is killed when the test ends.
func startChildTest(t *testing.T, env ...string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, stdout
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

// BenchmarkEmbeddedRouting compares reading one topic from benchWorkflows subscriptions when every record
// is for every subscription (no target workflows: each consumer takes every record) and when each record
// targets one of them (each consumer takes one record in benchWorkflows and skips the others):
//
//	go test -run '^$' -bench EmbeddedRouting -benchtime 100000x ./internal/broker/
//
// On the 2-core VM (3 rounds interleaved with the previous design, which stored a copy of each record
// under a subject per target workflow, so a consumer read only its workflow's records; 64 publishers,
// 100 records per call, fsync every write):
//
//	                          subject per workflow    one frame per round (now)
//	routed-by-workflow        133-190K events/s,      99-149K events/s,
//	                          5.9-6.9 µs CPU/event    9.8-12.2 µs CPU/event
//
// With calls this large the previous design's extra fsyncs hardly cost, and each consumer now reads every
// frame; in the load scenarios, with smaller rounds, one fsync per round wins (BENCHMARKS.md).
func BenchmarkEmbeddedRouting(b *testing.B) {
	for _, mode := range benchSyncModes {
		for _, routed := range []bool{false, true} {
			name := "every-consumer-reads-all"
			if routed {
				name = "routed-by-workflow"
			}
			b.Run(mode.name+"/"+name, func(b *testing.B) {
				br := openEmbeddedForTest(b, b.TempDir(), EmbeddedOptions{SyncInterval: mode.interval})
				benchRouting(b, br, routed)
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

// TestEmbeddedRecoversFromALostEngineConnection cuts off both connections to the engine, as it does with a
// client that falls too far behind reading: publishing and delivery resume without a restart.
func TestEmbeddedRecoversFromALostEngineConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	topic := newTopic(t, b, 2)
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{AckDeadline: time.Minute})
	before := makeRecords("before", 10, 2)
	publish(t, b, topic, before)
	assertSameIDs(t, "records before the cut", eventIDs(receiveN(t, c, len(before), true)), sortedIDs(before))

	for _, nc := range []*nats.Conn{b.pubConn, b.subConn} {
		id, err := nc.GetClientID()
		if err != nil {
			t.Fatalf("client id of %s: %v", nc.Opts.Name, err)
		}
		if err := b.server.DisconnectClientByID(id); err != nil {
			t.Fatalf("cut off %s: %v", nc.Opts.Name, err)
		}
	}

	// A write awaiting the engine's answer when the connection went fails; its publisher retries.
	after := makeRecords("after", 10, 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		err := b.Publish(ctx, topic, after)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Publish after the engine cut the connections off never succeeded: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := receiveN(t, c, len(after), true)
	assertSameIDs(t, "records after the cut", eventIDs(got), sortedIDs(after))
}

// TestEmbeddedDeliversLargeRecordsFromTheStoreAndTheFeed: a subscription reads what was stored before it
// attached from the engine's store, and what is written while it is attached from the topic's feed; a
// record of 1 MiB comes intact either way.
func TestEmbeddedDeliversLargeRecordsFromTheStoreAndTheFeed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{BatchBytes: 8 << 10})
	topic := newTopic(t, b, 1)
	records := makeRecords("large", 10, 1)
	records[2].Value = bytes.Repeat([]byte{'S'}, 1<<20)
	records[7].Value = bytes.Repeat([]byte{'F'}, 1<<20)
	for _, r := range records[:5] {
		publish(t, b, topic, []Record{r})
	}
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{AckDeadline: time.Minute})
	got := receiveN(t, c, 5, true)
	for _, r := range records[5:] {
		publish(t, b, topic, []Record{r})
	}
	got = append(got, receiveN(t, c, 5, true)...)
	for i, d := range got {
		if d.EventID != records[i].EventID || !bytes.Equal(d.Value, records[i].Value) {
			t.Fatalf("delivery %d: got %q (%d bytes), want %q (%d bytes)", i, d.EventID, len(d.Value), records[i].EventID, len(records[i].Value))
		}
	}
}

// TestEmbeddedReadsFromTheStoreWhatTheFeedDropped: a subscription that falls behind while another of its
// topic keeps up finds the frames gone from the topic's feed and reads them from the store, in order; the
// feed keeps what it read for a third subscription behind too.
func TestEmbeddedReadsFromTheStoreWhatTheFeedDropped(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	topic := newTopic(t, b, 2)
	fast := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	slow := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	slower := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	records := makeRecords("behind", 20, 2)
	publishOneByOne(t, b, topic, records)
	receiveN(t, fast, len(records), true)

	feed := slow.(*embeddedConsumer).cursor.feed
	feed.mu.Lock()
	cached := len(feed.frames)
	feed.mu.Unlock()
	if cached == 0 {
		t.Fatal("the feed holds no frame for the subscription that has not read them")
	}
	feed.trim(time.Now().Add(feedCacheAge))
	feed.mu.Lock()
	cached = len(feed.frames)
	feed.mu.Unlock()
	if cached != 0 {
		t.Fatalf("the feed still holds %d frames past their age", cached)
	}
	got := receiveN(t, slow, len(records), true)
	assertPartitionOrder(t, "records read from the store", got)
	assertSameIDs(t, "records read from the store", eventIDs(got), sortedIDs(records))

	feed.mu.Lock()
	cached = len(feed.frames)
	feed.mu.Unlock()
	if cached != len(records) {
		t.Fatalf("the feed holds %d frames read from the store, want all %d for the subscription still behind", cached, len(records))
	}
	got = receiveN(t, slower, len(records), true)
	assertSameIDs(t, "records the feed kept from the store", eventIDs(got), sortedIDs(records))
}

// BenchmarkDecodeBatchFrame decodes, as one of ten subscriptions of a topic, a full frame (256 records of
// 400 bytes, each for one of ten workflows) in the current format, whose index leads to the records to
// take, and in version 3, which is walked record by record. ns/record counts the frame's records.
func BenchmarkDecodeBatchFrame(b *testing.B) {
	const count = 256
	records := make([]Record, count)
	targets := make([][]string, count)
	for i := range records {
		targets[i] = []string{fmt.Sprintf("wf-%02d", i%10)}
		records[i] = Record{Partition: i % 16, Key: fmt.Sprintf("portfolio_%03d.state.update", i), EventID: uuid.NewString(),
			Value: make([]byte, 400), TargetWorkflows: targets[i]}
	}
	builder := newFrameBuilder(0)
	for i := range records {
		builder.add(&records[i])
	}
	frames := []struct {
		name  string
		frame []byte
	}{
		{name: "version=4-indexed", frame: builder.seal()},
		{name: "version=3-walked", frame: version3Frame(records, targets)},
	}
	for _, f := range frames {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got, err := decodeBatchFrame(f.frame, recordSelector{workflow: "wf-03"})
				if err != nil || len(got.records) != count/10+1 {
					b.Fatalf("decoded %d records, err %v", len(got.records), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*count), "ns/record")
		})
	}
}
