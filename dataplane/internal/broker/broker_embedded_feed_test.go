package broker

import (
	"testing"
	"time"
)

// The feed announces a frame only once every frame below it was written, or once it waited feedGapWait
// for a missing one: a reader woken for a frame must find the frames before it in the feed, not in the
// store.
func TestTopicFeedAnnouncesFramesInOrder(t *testing.T) {
	f := newTopicFeed(nil, topicNames(TopicRef{TenantID: "t", ID: "feed"}), 10, true)
	f.attachReader()
	at := time.Now()
	announced := func() uint64 {
		last, _ := f.state()
		return last
	}

	f.written(12, []byte("12"), at)
	f.written(13, []byte("13"), at)
	if got := announced(); got != 10 {
		t.Fatalf("after 12 and 13 were written without 11: announced up to %d, want 10", got)
	}
	_, advanced := f.state()
	f.written(11, []byte("11"), at)
	if got := announced(); got != 13 {
		t.Fatalf("after 11 was written too: announced up to %d, want 13", got)
	}
	select {
	case <-advanced:
	default:
		t.Fatal("readers waiting for the feed were not woken")
	}
	frames, after, err := f.read(t.Context(), 11, 10, 3)
	if err != nil || after != 13 || len(frames) != 2 {
		t.Fatalf("read from 11 up to 3 bytes: %d frames, continue at %d, %v; want the 2 frames that reach 3 bytes, continue at 13", len(frames), after, err)
	}
	frames, after, err = f.read(t.Context(), 13, 10, 1<<20)
	if err != nil || after != 14 || len(frames) != 1 || frames[0].seq != 13 {
		t.Fatalf("read from 13: %d frames, continue at %d, %v; want frame 13 from the feed, continue at 14", len(frames), after, err)
	}

	f.written(15, []byte("15"), at)
	f.written(16, []byte("16"), at.Add(feedGapWait/2))
	if got := announced(); got != 13 {
		t.Fatalf("with 14 missing for less than %v: announced up to %d, want 13", feedGapWait, got)
	}
	f.written(17, []byte("17"), at.Add(feedGapWait))
	if got := announced(); got != 17 {
		t.Fatalf("with 14 missing for %v: announced up to %d, want 17", feedGapWait, got)
	}
	f.written(14, []byte("14"), at.Add(feedGapWait))
	f.written(18, []byte("18"), at.Add(feedGapWait))
	if got := announced(); got != 18 {
		t.Fatalf("after the late 14 and then 18: announced up to %d, want 18", got)
	}
}
