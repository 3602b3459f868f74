package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Every subscription of a topic reads the topic's one stream. Handing each of them its own copy of every
// engine message through a JetStream consumer cost, per subscription and message, a delivery through the
// in-process connection, an acknowledgement back and the consumer's bookkeeping: with 100 subscriptions,
// 100 of each per write. Instead the subscriptions' cursors (broker_embedded_cursor.go) read the frames
// this process just wrote from the topic's feed, shared, and ask the engine's store only for what the feed
// no longer holds (a subscription catching up, or one started before the process).

// Bounds of a feed's frames. A frame leaves once every cursor reading the topic took it, or when the
// topic's frames exceed feedCacheBytes (oldest first), or feedCacheAge after it entered the feed; a cursor
// that finds it gone reads it from the store.
const (
	feedCacheBytes = 32 << 20
	feedCacheAge   = 10 * time.Second
)

// feedGapWait is how long the feed waits for a frame's acknowledgement when a later frame's came first,
// before it announces the later one anyway (readers then read the missing frame from the store).
const feedGapWait = 50 * time.Millisecond

// feedPollInterval is how often a waiting reader asks the engine for the stream's last sequence. Frames
// written by this process are announced at once; only records written by other means (none in production)
// wait for it.
const feedPollInterval = time.Second

// errNoStoredFrame: the stream holds nothing at or after the sequence asked for.
var errNoStoredFrame = errors.New("no stored frame")

// errStreamGone: the topic's stream no longer exists.
var errStreamGone = errors.New("stream deleted")

// storedFrame is one engine message of a topic's stream.
type storedFrame struct {
	seq     uint64
	subject string
	data    []byte
	stored  time.Time
}

type cachedFrame struct {
	storedFrame
	// unread counts the attached cursors expected to take the frame still.
	unread   int
	cachedAt time.Time // when it entered the feed
}

// topicFeed is what this process knows of one topic's stream: the last sequence stored, and the recent
// frames the topic's cursors are still expected to read.
type topicFeed struct {
	broker  *EmbeddedBroker
	stream  string
	subject string // the topic subject, under which this process writes

	mu sync.Mutex
	// last is the highest sequence announced to readers as stored; every lower one is stored too (or
	// expired), since the engine numbers messages as it stores them.
	last uint64
	// advanced is closed and replaced when last grows.
	advanced chan struct{}
	// early holds sequences acknowledged above last+1: acknowledgements of concurrent writes may be
	// handled out of order, and announcing a frame before the ones below it would send readers to the store
	// for those. gapSince is when the oldest of them came.
	early    map[uint64]struct{}
	gapSince time.Time
	// readers counts the cursors of the topic with a consumer attached: only while there are some does the
	// feed keep frames.
	readers   int
	frames    map[uint64]*cachedFrame
	order     []uint64 // sequences of frames, oldest first; some may have left already
	bytes     int
	polledAt  time.Time
	storeSubj string // every subject of the stream, for reading the store
	// direct: the stream allows direct gets, so the store is read in batches (loadFrames).
	direct bool

	// loadMu lets one cursor at a time read the store: cursors behind the feed together would otherwise
	// each read the same frames at once, each into memory of its own.
	loadMu sync.Mutex
}

func newTopicFeed(b *EmbeddedBroker, names engineNames, last uint64, direct bool) *topicFeed {
	return &topicFeed{
		broker:    b,
		stream:    names.stream,
		subject:   names.topicSubject(),
		storeSubj: names.subjectPrefix + ".>",
		last:      last,
		advanced:  make(chan struct{}),
		early:     map[uint64]struct{}{},
		frames:    map[uint64]*cachedFrame{},
		polledAt:  time.Now(),
		direct:    direct,
	}
}

// feedFor returns the feed of the topic, creating it from the stream's state.
func (b *EmbeddedBroker) feedFor(ctx context.Context, names engineNames) (*topicFeed, error) {
	b.mu.Lock()
	f, ok := b.feeds[names.stream]
	b.mu.Unlock()
	if ok {
		return f, nil
	}
	stream, err := b.js.Stream(ctx, names.stream)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if f, ok := b.feeds[names.stream]; ok {
		return f, nil
	}
	info := stream.CachedInfo()
	f = newTopicFeed(b, names, info.State.LastSeq, info.Config.AllowDirect)
	b.feeds[names.stream] = f
	return f, nil
}

// written notes a frame the engine acknowledged at seq, and announces it once every frame below it is.
func (f *topicFeed) written(seq uint64, data []byte, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers > 0 {
		f.keepLocked(storedFrame{seq: seq, subject: f.subject, data: data, stored: at}, f.readers, at)
	}
	switch {
	case seq <= f.last:
	case seq == f.last+1:
		last := seq
		for {
			if _, ok := f.early[last+1]; !ok {
				break
			}
			delete(f.early, last+1)
			last++
		}
		f.advanceLocked(last)
		if len(f.early) > 0 {
			f.gapSince = at // a later gap, open since about now
		}
	default:
		if len(f.early) == 0 {
			f.gapSince = at
		}
		f.early[seq] = struct{}{}
		if at.Sub(f.gapSince) >= feedGapWait {
			// The missing frame's acknowledgement got lost (its write failed after the engine stored it):
			// readers find it in the store.
			f.advanceLocked(slices.Max(slices.Collect(maps.Keys(f.early))))
		}
	}
}

func (f *topicFeed) advanceLocked(seq uint64) {
	if seq <= f.last {
		return
	}
	f.last = seq
	for early := range f.early {
		if early <= seq {
			delete(f.early, early)
		}
	}
	if len(f.early) == 0 {
		f.gapSince = time.Time{}
	}
	close(f.advanced)
	f.advanced = make(chan struct{})
}

// keepLocked holds sf for the unread cursors that have yet to take it.
func (f *topicFeed) keepLocked(sf storedFrame, unread int, now time.Time) {
	if _, ok := f.frames[sf.seq]; ok || unread <= 0 {
		return
	}
	f.frames[sf.seq] = &cachedFrame{storedFrame: sf, unread: unread, cachedAt: now}
	f.order = append(f.order, sf.seq)
	f.bytes += cap(sf.data) // capacity: a frame this process wrote keeps the room its batch was given
	f.trimLocked(now)
}

// trimLocked drops frames beyond the feed's bounds, oldest first.
func (f *topicFeed) trimLocked(now time.Time) {
	for len(f.order) > 0 {
		seq := f.order[0]
		cf, ok := f.frames[seq]
		if ok && f.bytes <= feedCacheBytes && now.Sub(cf.cachedAt) < feedCacheAge {
			return
		}
		f.order[0] = 0
		f.order = f.order[1:]
		if ok {
			f.dropLocked(cf)
		}
	}
	f.order = nil
}

func (f *topicFeed) dropLocked(cf *cachedFrame) {
	delete(f.frames, cf.seq)
	f.bytes -= cap(cf.data)
}

// trim drops frames older than feedCacheAge; the broker calls it now and then so an idle topic's frames
// do not stay.
func (f *topicFeed) trim(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trimLocked(now)
}

func (f *topicFeed) attachReader() {
	f.mu.Lock()
	f.readers++
	f.mu.Unlock()
}

func (f *topicFeed) detachReader() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readers--
	if f.readers == 0 {
		clear(f.frames)
		f.order = nil
		f.bytes = 0
	}
}

// state returns the last stored sequence and a channel closed when it grows.
func (f *topicFeed) state() (last uint64, advanced <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.advanced
}

// poll asks the engine for the stream's last sequence, at most once per feedPollInterval.
func (f *topicFeed) poll(ctx context.Context) error {
	f.mu.Lock()
	due := time.Since(f.polledAt) >= feedPollInterval
	if due {
		f.polledAt = time.Now()
	}
	f.mu.Unlock()
	if !due {
		return nil
	}
	return f.refresh(ctx)
}

// refresh asks the engine for the stream's last sequence.
func (f *topicFeed) refresh(ctx context.Context) error {
	stream, err := f.broker.js.Stream(ctx, f.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return errStreamGone
	}
	if err != nil {
		return fmt.Errorf("read the state of stream %s: %w", f.stream, err)
	}
	info := stream.CachedInfo()
	f.mu.Lock()
	f.direct = info.Config.AllowDirect
	f.advanceLocked(info.State.LastSeq)
	f.mu.Unlock()
	return nil
}

// read returns up to limit frames stored from sequence from on, and fewer once they hold maxBytes, taking
// them from the feed where it can and from the engine's store otherwise, and the sequence after what it
// covered: a cursor continues there.
func (f *topicFeed) read(ctx context.Context, from uint64, limit, maxBytes int) ([]storedFrame, uint64, error) {
	var out []storedFrame
	seq := from
	for bytes := 0; ; {
		f.mu.Lock()
		// The frames the feed holds, in one hold of the lock.
		for ; seq <= f.last && len(out) < limit && bytes < maxBytes; seq++ {
			cf, ok := f.frames[seq]
			if !ok {
				break
			}
			if cf.unread--; cf.unread <= 0 {
				f.dropLocked(cf)
			}
			out = append(out, cf.storedFrame)
			bytes += len(cf.data)
		}
		last := f.last
		f.mu.Unlock()
		if seq > last || len(out) >= limit || bytes >= maxBytes {
			break
		}
		loaded, err := f.load(ctx, seq, limit-len(out), maxBytes-bytes)
		if errors.Is(err, errNoStoredFrame) {
			// Everything up to last has expired, or last came from a stream deleted and made again.
			return out, last + 1, nil
		}
		if err != nil {
			return out, seq, err
		}
		if loaded == nil {
			continue // another cursor just read it into the feed
		}
		for _, sf := range loaded {
			bytes += len(sf.data)
		}
		out = append(out, loaded...)
		seq = loaded[len(loaded)-1].seq + 1
	}
	return out, seq, nil
}

// directGetTimeout bounds the wait for the engine's answer to one read of the store.
const directGetTimeout = 10 * time.Second

// loadFrames reads from the store up to limit messages of stream at or after sequence from whose subjects
// match subjects, stopping after the message that reaches maxBytes, in one direct-get request (a batch the engine sends as messages, then an end-of-batch
// status). The stream must allow direct gets; one created by an earlier version allows them once
// ensured again, and is read with loadFrame until then.
func (b *EmbeddedBroker) loadFrames(ctx context.Context, stream, subjects string, from uint64, limit, maxBytes int) ([]storedFrame, error) {
	ctx, cancel := context.WithTimeout(ctx, directGetTimeout)
	defer cancel()
	inbox := b.subConn.NewInbox()
	sub, err := b.subConn.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		NextFor  string `json:"next_by_subj"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes"`
	}{max(from, 1), subjects, max(limit, 1), max(maxBytes, 1)})
	if err := b.subConn.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	var out []storedFrame
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", stream, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of the batch
			if len(out) == 0 {
				return nil, errNoStoredFrame
			}
			return out, nil
		case "404":
			if len(out) == 0 {
				return nil, errNoStoredFrame
			}
			return out, nil
		default:
			return nil, fmt.Errorf("read stream %s: status %s %s", stream, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read stream %s: message without a sequence: %w", stream, err)
		}
		stored, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Time-Stamp"))
		if err != nil {
			return nil, fmt.Errorf("read stream %s: message %d without a time: %w", stream, seq, err)
		}
		out = append(out, storedFrame{seq: seq, subject: m.Header.Get("Nats-Subject"), data: m.Data, stored: stored.UTC()})
	}
}

// load reads frames from sequence seq on from the store, unless another cursor brought seq into the feed
// meanwhile (then it returns nil). Other cursors behind the feed then take what it read from the feed
// rather than read the store again each. The feed does not know which cursors are behind: the frames wait
// for all but this one, or their age, whichever comes first.
func (f *topicFeed) load(ctx context.Context, seq uint64, limit, maxBytes int) ([]storedFrame, error) {
	f.loadMu.Lock()
	defer f.loadMu.Unlock()
	f.mu.Lock()
	_, cached := f.frames[seq]
	direct := f.direct
	f.mu.Unlock()
	if cached {
		return nil, nil
	}
	var loaded []storedFrame
	var err error
	if direct {
		loaded, err = f.broker.loadFrames(ctx, f.stream, f.storeSubj, seq, limit, maxBytes)
	} else {
		var sf storedFrame
		sf, err = f.broker.loadFrame(ctx, f.stream, f.storeSubj, seq)
		loaded = []storedFrame{sf}
	}
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for _, sf := range loaded {
		f.keepLocked(sf, f.readers-1, now)
	}
	return loaded, nil
}

// msgGetResponse is the engine's answer to STREAM.MSG.GET.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Data    []byte    `json:"data"`
		Time    time.Time `json:"time"`
	} `json:"message"`
}

// Error codes of the engine's API.
const (
	apiErrStreamNotFound = 10059
	apiErrNoMessageFound = 10037
)

// loadFrame reads from the store the first message of stream at or after sequence from whose subject
// matches subjects, through the engine's API (JSON).
func (b *EmbeddedBroker) loadFrame(ctx context.Context, stream, subjects string, from uint64) (storedFrame, error) {
	req, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{max(from, 1), subjects})
	return b.getStoredMessage(ctx, stream, req)
}

// seqAtTime returns the sequence of the stream's first message stored at or after t, or the sequence
// after its last one when there is none.
func (b *EmbeddedBroker) seqAtTime(ctx context.Context, feed *topicFeed, t time.Time) (uint64, error) {
	req, _ := json.Marshal(struct {
		StartTime time.Time `json:"start_time"`
	}{t.UTC()})
	sf, err := b.getStoredMessage(ctx, feed.stream, req)
	if errors.Is(err, errNoStoredFrame) {
		if err := feed.refresh(ctx); err != nil {
			return 0, err
		}
		last, _ := feed.state()
		return last + 1, nil
	}
	if err != nil {
		return 0, err
	}
	return sf.seq, nil
}

func (b *EmbeddedBroker) getStoredMessage(ctx context.Context, stream string, req []byte) (storedFrame, error) {
	reply, err := b.subConn.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return storedFrame{}, fmt.Errorf("read stream %s: %w", stream, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return storedFrame{}, fmt.Errorf("read stream %s: unreadable answer: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == apiErrNoMessageFound:
		return storedFrame{}, errNoStoredFrame
	case resp.Error != nil && resp.Error.ErrCode == apiErrStreamNotFound:
		return storedFrame{}, errStreamGone
	case resp.Error != nil:
		return storedFrame{}, fmt.Errorf("read stream %s: %s (code %d)", stream, resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return storedFrame{}, fmt.Errorf("read stream %s: answer without a message", stream)
	}
	m := resp.Message
	return storedFrame{seq: m.Seq, subject: m.Subject, data: m.Data, stored: m.Time.UTC()}, nil
}
