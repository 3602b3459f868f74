package broker

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// subscriptionCursor reads one subscription's records from its topic's stream for every consumer of the
// subscription in this process, and keeps what they were handed and what they acknowledged. The
// subscription's durable state is its resume position alone (broker_embedded_positions.go): the stream
// sequence of the first frame with a record not yet acknowledged, or of the first frame not read.
//
// Frames are read in stream order; a frame's records the subscription takes (by workflow, see
// recordSelector) wait in fresh until a consumer takes them. A record handed out is held by that consumer
// until it is acknowledged, nacked, or its ack deadline passes, or the consumer closes; in the last three
// cases it goes to again, which consumers take from first.
type subscriptionCursor struct {
	broker *EmbeddedBroker
	// key names the subscription in the broker's registries (stream/consumer).
	key   string
	subID string
	feed  *topicFeed
	// routedPrefix starts every workflow subject of the topic (frame version 2).
	routedPrefix string

	mu sync.Mutex
	// workflow is the subscription's: the cursor takes the records targeting it or no workflow; ownSubject
	// is its workflow subject, empty when workflow is. See selectorFor.
	workflow   string
	ownSubject string
	// generation grows with each seek: frames read before it are not kept.
	generation uint64
	// next is the first stream sequence not read yet.
	next   uint64
	frames map[uint64]*heldFrame // read, with records not all acknowledged, by sequence
	order  []uint64              // sequences of frames, ascending; some may have left already
	fresh  []recordRef           // read and never handed out, in stream order
	again  []recordRef           // handed out before and back
	// serial numbers hand-outs, so a consumer's list of them can tell a current one from a stale one.
	serial    uint64
	consumers map[*embeddedConsumer]struct{}
	// reading: a Receive is reading frames without the lock; others wait for changed.
	reading bool
	// changed is closed and replaced when a waiting Receive may find something to do.
	changed chan struct{}
	gone    bool
}

// heldFrame is a frame the subscription read and has records of not yet acknowledged.
type heldFrame struct {
	seq       uint64
	stored    time.Time
	frame     decodedFrame
	states    []recordState // by position in frame.records
	remaining int           // records not acknowledged
	// dropped: a seek forgot the frame; its records are handed out no more and their acks are ignored.
	dropped bool
}

type recordState struct {
	holder   *embeddedConsumer // nil unless handed out and not yet back
	handout  uint64            // the holder's hand-out serial
	attempts int32
	acked    bool
}

type recordRef struct {
	frame *heldFrame
	i     int
}

func (r recordRef) state() *recordState { return &r.frame.states[r.i] }

func newSubscriptionCursor(b *EmbeddedBroker, key string, sub SubscriptionRef, names engineNames, feed *topicFeed, next uint64) *subscriptionCursor {
	cur := &subscriptionCursor{
		broker:       b,
		key:          key,
		subID:        sub.ID,
		feed:         feed,
		routedPrefix: names.subjectPrefix + ".w.",
		next:         next,
		frames:       map[uint64]*heldFrame{},
		consumers:    map[*embeddedConsumer]struct{}{},
		changed:      make(chan struct{}),
	}
	cur.setWorkflowLocked(sub.Workflow, names)
	return cur
}

// setWorkflowLocked makes the cursor take the records of workflow from the next frame it reads on; frames
// already read keep the records they were read with.
func (cur *subscriptionCursor) setWorkflowLocked(workflow string, names engineNames) {
	cur.workflow = workflow
	cur.ownSubject = ""
	if workflow != "" {
		cur.ownSubject = names.workflowSubject(workflow)
	}
}

// selectorFor says which records of a message stored under subject the cursor takes. The topic subject
// holds every workflow's records: it takes those for its workflow. A workflow subject (frame version 2)
// holds copies of one workflow's records: with a workflow it skips other workflows' subjects, whose records
// for it are also under its own; without one, it skips the copies, to read each record once.
func (cur *subscriptionCursor) selectorFor(subject string) (sel recordSelector, skipAll bool) {
	if !strings.HasPrefix(subject, cur.routedPrefix) {
		return recordSelector{workflow: cur.workflow}, false
	}
	if cur.ownSubject == "" {
		return recordSelector{skipCopies: true}, false
	}
	return recordSelector{}, subject != cur.ownSubject
}

// signalLocked wakes every Receive waiting on the cursor.
func (cur *subscriptionCursor) signalLocked() {
	close(cur.changed)
	cur.changed = make(chan struct{})
}

// resumeLocked is where the subscription resumes after a restart.
func (cur *subscriptionCursor) resumeLocked() uint64 {
	cur.trimOrderLocked()
	if len(cur.order) > 0 {
		return cur.order[0]
	}
	return cur.next
}

func (cur *subscriptionCursor) trimOrderLocked() {
	for len(cur.order) > 0 {
		if _, held := cur.frames[cur.order[0]]; held {
			return
		}
		cur.order = cur.order[1:]
	}
	cur.order = nil
}

// applyLocked keeps the records the subscription takes of frames read from sequence cur.next on, unless a
// seek came in between (generation), and moves next to after.
func (cur *subscriptionCursor) applyLocked(generation uint64, frames []storedFrame, after uint64) {
	if generation != cur.generation || cur.gone {
		return
	}
	for _, sf := range frames {
		if sf.seq >= cur.next {
			cur.keepLocked(sf)
		}
	}
	cur.next = max(cur.next, after)
}

// keepLocked decodes the records of sf the subscription takes and queues them.
func (cur *subscriptionCursor) keepLocked(sf storedFrame) {
	log := cur.broker.log
	sel, skipAll := cur.selectorFor(sf.subject)
	if skipAll {
		return
	}
	frame, err := decodeBatchFrame(sf.data, sel)
	if errors.Is(err, errNewerBatchFrame) {
		// An earlier build running on a later build's data: skipping the frame would lose its events. It is
		// held unacknowledged, so the subscription resumes at it after a restart with a build that reads it.
		log.Error("embedded broker: batch written by a later PDS version, left in place; run that version or a later one on this data directory",
			"subscription", cur.subID, "stream_seq", sf.seq, "err", err)
		cur.holdLocked(&heldFrame{seq: sf.seq, stored: sf.stored, remaining: 1})
		return
	}
	if err != nil {
		// Reading it again would fail the same way forever.
		log.Error("embedded broker: dropping undecodable batch", "subscription", cur.subID, "stream_seq", sf.seq, "err", err)
		return
	}
	if len(frame.records) == 0 {
		return
	}
	hf := &heldFrame{seq: sf.seq, stored: sf.stored, frame: frame, states: make([]recordState, len(frame.records)), remaining: len(frame.records)}
	cur.holdLocked(hf)
	for i := range frame.records {
		cur.fresh = append(cur.fresh, recordRef{frame: hf, i: i})
	}
}

func (cur *subscriptionCursor) holdLocked(hf *heldFrame) {
	cur.frames[hf.seq] = hf
	cur.order = append(cur.order, hf.seq)
}

// handOutLocked gives c up to limit records: those back from other hand-outs first, then fresh ones.
func (cur *subscriptionCursor) handOutLocked(c *embeddedConsumer, limit int, now time.Time) []Delivery {
	available := len(cur.again) + len(cur.fresh)
	if available == 0 {
		return nil
	}
	out := make([]Delivery, 0, min(limit, available))
	cur.again, out = cur.takeFromLocked(cur.again, c, limit, now, out)
	cur.fresh, out = cur.takeFromLocked(cur.fresh, c, limit, now, out)
	return out
}

func (cur *subscriptionCursor) takeFromLocked(queue []recordRef, c *embeddedConsumer, limit int, now time.Time, out []Delivery) ([]recordRef, []Delivery) {
	used := 0
	for used < len(queue) && len(out) < limit {
		ref := queue[used]
		used++
		st := ref.state()
		if ref.frame.dropped || st.acked || st.holder != nil {
			continue
		}
		cur.serial++
		st.holder, st.handout = c, cur.serial
		st.attempts++
		c.held++
		c.handouts = append(c.handouts, handout{ref: ref, serial: cur.serial, at: now})
		hf := ref.frame
		out = append(out, Delivery{
			Record:      hf.frame.records[ref.i],
			Handle:      AckHandle{Token: ackToken(hf.seq, hf.frame.frameIndex(ref.i))},
			Attempt:     int(st.attempts),
			PublishTime: hf.stored,
		})
	}
	clear(queue[:used])
	queue = queue[used:]
	if len(queue) == 0 {
		queue = nil
	}
	return queue, out
}

// expireLocked takes back the records whose holders' ack deadlines passed and returns when the next one
// passes (zero if none is held).
func (cur *subscriptionCursor) expireLocked(now time.Time) time.Time {
	var next time.Time
	expired := false
	for c := range cur.consumers {
		for len(c.handouts) > 0 {
			h := c.handouts[0]
			st := h.ref.state()
			if h.ref.frame.dropped || st.holder != c || st.handout != h.serial {
				c.popHandout()
				continue
			}
			due := h.at.Add(c.ackDeadline)
			if now.Before(due) {
				if next.IsZero() || due.Before(next) {
					next = due
				}
				break
			}
			cur.releaseLocked(h.ref)
			c.popHandout()
			expired = true
		}
	}
	if expired {
		cur.signalLocked()
	}
	return next
}

// releaseLocked takes a handed-out record back from its holder, for any consumer to take again.
func (cur *subscriptionCursor) releaseLocked(ref recordRef) {
	st := ref.state()
	st.holder.held--
	st.holder = nil
	cur.again = append(cur.again, ref)
}

// lookupLocked finds the record an ack token names among the held frames.
func (cur *subscriptionCursor) lookupLocked(token string) (recordRef, bool) {
	seq, index, ok := parseAckToken(token)
	if !ok {
		return recordRef{}, false
	}
	hf, ok := cur.frames[seq]
	if !ok || hf.dropped {
		return recordRef{}, false
	}
	i := index
	if hf.frame.indexes != nil {
		j, found := slices.BinarySearch(hf.frame.indexes, int32(index))
		if !found {
			return recordRef{}, false
		}
		i = j
	}
	if i >= len(hf.states) {
		return recordRef{}, false
	}
	return recordRef{frame: hf, i: i}, true
}

// ackLocked acknowledges the record; it reports whether a consumer held it.
func (cur *subscriptionCursor) ackLocked(ref recordRef) (freed bool) {
	st := ref.state()
	if st.acked || st.attempts == 0 {
		return false // already acknowledged, or never handed out: not a token this cursor gave
	}
	if st.holder != nil {
		st.holder.held--
		st.holder = nil
		freed = true
	}
	st.acked = true
	hf := ref.frame
	if hf.remaining--; hf.remaining == 0 {
		delete(cur.frames, hf.seq)
	}
	return freed
}

// resetLocked forgets everything read and handed out, and makes the cursor read from next on.
func (cur *subscriptionCursor) resetLocked(next uint64) {
	cur.generation++
	for _, hf := range cur.frames {
		hf.dropped = true
	}
	clear(cur.frames)
	cur.order, cur.fresh, cur.again = nil, nil, nil
	for c := range cur.consumers {
		c.held = 0
		c.handouts = nil
	}
	cur.next = next
	cur.signalLocked()
}

// attachLocked adds a consumer; the feed keeps frames for the topic while any cursor has one.
func (cur *subscriptionCursor) attachLocked(c *embeddedConsumer) {
	if len(cur.consumers) == 0 {
		cur.feed.attachReader()
	}
	cur.consumers[c] = struct{}{}
}

func (cur *subscriptionCursor) detachLocked(c *embeddedConsumer) {
	if _, ok := cur.consumers[c]; !ok {
		return
	}
	delete(cur.consumers, c)
	if len(cur.consumers) == 0 {
		cur.feed.detachReader()
	}
}

// markGone ends the cursor: its consumers' Receive calls report ErrSubscriptionGone.
func (cur *subscriptionCursor) markGone() {
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if cur.gone {
		return
	}
	cur.gone = true
	cur.resetLocked(cur.next)
}
