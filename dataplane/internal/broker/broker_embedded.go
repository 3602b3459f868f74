package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	_ Broker      = (*EmbeddedBroker)(nil)
	_ LatestViews = (*EmbeddedBroker)(nil)
)

// Defaults of EmbeddedOptions; each applies when its field is zero.
const (
	DefaultEmbeddedRetention      = 7 * 24 * time.Hour
	DefaultEmbeddedBatchRecords   = 256
	DefaultEmbeddedBatchBytes     = 512 << 10
	DefaultEmbeddedInFlightWrites = 64
	// DefaultEmbeddedPositionInterval bounds what a crash delivers again to about a second's
	// acknowledgements, for one synced file write a second.
	DefaultEmbeddedPositionInterval = time.Second
)

// embeddedMaxPayload bounds one JetStream message (one batch), so one record can be nearly this large.
const embeddedMaxPayload = 8 << 20

// EmbeddedOptions configure OpenEmbedded.
type EmbeddedOptions struct {
	// Dir holds JetStream's files (streams, latest views) and the subscriptions' positions. Required;
	// reopening the same Dir finds every record and subscription position stored before.
	Dir string
	// Logger receives the engine's warnings and errors. Nil discards them.
	Logger *slog.Logger
	// Retention is how long a topic keeps a record, acknowledged or not, so a subscription created later
	// still finds it. Zero means DefaultEmbeddedRetention (7 days).
	Retention time.Duration
	// SyncInterval chooses when JetStream fsyncs its files. Zero (the default) means after every write
	// (SyncAlways): a Publish that returned nil survives a crash of the host as well as of the process,
	// as the Broker contract requires. A positive value fsyncs at that interval instead: a host crash may
	// lose up to that much acknowledged data; a process crash still loses nothing, because JetStream
	// writes to the file before it acknowledges.
	//
	// The cost, measured on the 2-core development VM (fsync of a 4 KiB write ≈ 2.2 ms) with
	// BenchmarkEmbeddedPublish (64 concurrent callers, 256-byte records):
	//
	//	                         fsync every write   fsync every 2m   (records/s, range over runs)
	//	1 record per Publish        26-30K              150-185K
	//	100 records per Publish    115-200K             455-805K
	//
	// One record per call is bound by 64 callers waiting one fsync each; adaptive batching (topicBatcher)
	// puts everything that arrives during one fsync into the next write, so more concurrent callers or
	// bigger calls raise it.
	SyncInterval time.Duration
	// BatchRecords caps the records in one batch (one engine write). Zero means DefaultEmbeddedBatchRecords.
	BatchRecords int
	// BatchBytes caps the encoded size of one batch; a single larger record travels alone. Zero means
	// DefaultEmbeddedBatchBytes (512 KiB).
	BatchBytes int
	// InFlightWrites caps the batches written and not yet acknowledged by the engine, across all topics;
	// Publish blocks beyond it. Zero means DefaultEmbeddedInFlightWrites.
	InFlightWrites int
	// PositionInterval is how often the subscriptions' resume positions are saved (see
	// broker_embedded_positions.go): what a crash may deliver again. Zero means
	// DefaultEmbeddedPositionInterval.
	PositionInterval time.Duration
}

func (o *EmbeddedOptions) withDefaults() EmbeddedOptions {
	out := *o
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.Retention <= 0 {
		out.Retention = DefaultEmbeddedRetention
	}
	if out.BatchRecords <= 0 {
		out.BatchRecords = DefaultEmbeddedBatchRecords
	}
	if out.BatchBytes <= 0 {
		out.BatchBytes = DefaultEmbeddedBatchBytes
	}
	if out.BatchBytes > embeddedMaxPayload/2 {
		out.BatchBytes = embeddedMaxPayload / 2
	}
	if out.InFlightWrites <= 0 {
		out.InFlightWrites = DefaultEmbeddedInFlightWrites
	}
	if out.PositionInterval <= 0 {
		out.PositionInterval = DefaultEmbeddedPositionInterval
	}
	return out
}

// EmbeddedBroker runs a NATS server with JetStream inside the process, reached through in-process
// connections (no network listener), and stores every topic as one JetStream stream. Publish coalesces
// records of one topic, across concurrent calls, into one JetStream message (see batchframe.go and
// topicBatcher). Subscriptions are not JetStream consumers: each is a cursor of PDS's over its topic's
// stream (broker_embedded_cursor.go), which takes the records for its workflow (see Broker) from the frames
// this process wrote, shared by all of the topic's cursors (broker_embedded_feed.go), or from the engine's
// store, and keeps their acknowledgements itself.
type EmbeddedBroker struct {
	opts   EmbeddedOptions
	log    *slog.Logger
	server *server.Server
	// pubConn carries publishes; subConn carries the cursors' reads of the store, so a flood of publishes
	// does not queue ahead of them.
	pubConn *nats.Conn
	subConn *nats.Conn
	js      jetstream.JetStream

	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
	// writeSlots bounds batches in flight to the engine.
	writeSlots chan struct{}

	mu       sync.Mutex
	writers  map[string]*topicBatcher       // by stream
	feeds    map[string]*topicFeed          // by stream
	cursors  map[string]*subscriptionCursor // by stream/consumer
	kv       map[string]jetstream.KeyValue  // by tenant
	legacyKV map[string]jetstream.KeyValue  // by tenant; nil: the tenant has no bucket of an earlier build
	// changing holds, per subscription a Seek or Subscribe is working on, the channel closed when it is
	// done (by stream/consumer).
	changing map[string]chan struct{}

	positions     *positionBook
	stopPositions chan struct{}
	positionsDone chan struct{}
}

// OpenEmbedded starts the engine on opts.Dir and connects to it.
func OpenEmbedded(ctx context.Context, opts EmbeddedOptions) (*EmbeddedBroker, error) {
	if opts.Dir == "" {
		return nil, errors.New("open embedded broker: Dir is required")
	}
	o := opts.withDefaults()
	positions, err := loadPositions(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("open embedded broker in %s: %w", o.Dir, err)
	}
	srvOpts := &server.Options{
		ServerName:         "pds-embedded",
		DontListen:         true,
		JetStream:          true,
		StoreDir:           o.Dir,
		NoSigs:             true,
		MaxPayload:         embeddedMaxPayload,
		JetStreamMaxMemory: 64 << 20,
		SyncAlways:         o.SyncInterval == 0,
		SyncInterval:       o.SyncInterval,
		// The engine's only clients are this process's connections, and what it may have queued for them
		// is bounded by their requests (publish acknowledgements, reads of the store of readAheadBytes), so
		// its default cut-off (64 MiB) would only turn a burst into a lost connection.
		MaxPending: 1 << 30,
	}
	srv, err := server.NewServer(srvOpts)
	if err != nil {
		return nil, fmt.Errorf("open embedded broker in %s: %w", o.Dir, err)
	}
	srv.SetLoggerV2(natsLogger{log: o.Logger}, false, false, false)
	srv.Start()
	if !waitServerReady(ctx, srv) {
		srv.Shutdown()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("open embedded broker in %s: %w", o.Dir, ctx.Err())
		}
		return nil, fmt.Errorf("open embedded broker in %s: engine did not become ready", o.Dir)
	}
	b := &EmbeddedBroker{
		opts:       o,
		log:        o.Logger,
		server:     srv,
		closed:     make(chan struct{}),
		writeSlots: make(chan struct{}, o.InFlightWrites),
		writers:    map[string]*topicBatcher{},
		feeds:      map[string]*topicFeed{},
		cursors:    map[string]*subscriptionCursor{},
		kv:         map[string]jetstream.KeyValue{},
		legacyKV:   map[string]jetstream.KeyValue{},
		changing:   map[string]chan struct{}{},

		positions:     positions,
		stopPositions: make(chan struct{}),
		positionsDone: make(chan struct{}),
	}
	// The engine may still cut a connection off (a client that falls too far behind reading is a slow
	// consumer to it): the connections then reconnect at once rather than leave the broker unusable until
	// the process restarts. Reads lost with the connection fail and are retried, and writes awaiting the
	// engine's answer fail, so their publishers retry.
	connect := func(name string) (*nats.Conn, error) {
		return nats.Connect("", nats.InProcessServer(srv), nats.Name(name),
			nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond), nats.ReconnectJitter(0, 0),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				o.Logger.Warn("embedded broker connection error", "conn", name, "err", err)
			}),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if !b.isClosed() {
					o.Logger.Error("embedded broker connection lost; reconnecting", "conn", name, "err", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) {
				o.Logger.Warn("embedded broker connection restored", "conn", name)
			}))
	}
	if b.pubConn, err = connect("pds-publish"); err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("open embedded broker: connect: %w", err)
	}
	if b.subConn, err = connect("pds-consume"); err != nil {
		b.pubConn.Close()
		srv.Shutdown()
		return nil, fmt.Errorf("open embedded broker: connect: %w", err)
	}
	// jetstream's own async limit sits above writeSlots so it never stalls a write we admitted.
	b.js, err = jetstream.New(b.pubConn, jetstream.WithPublishAsyncMaxPending(4*o.InFlightWrites))
	if err != nil {
		_ = b.shutdown()
		return nil, fmt.Errorf("open embedded broker: jetstream: %w", err)
	}
	go b.runPositions(o.PositionInterval, b.stopPositions, b.positionsDone)
	return b, nil
}

func waitServerReady(ctx context.Context, srv *server.Server) bool {
	for ctx.Err() == nil {
		if srv.ReadyForConnections(100 * time.Millisecond) {
			return true
		}
	}
	return false
}

func (b *EmbeddedBroker) isClosed() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// Close detaches every consumer (their unacknowledged records go back to the subscription), fails pending
// Publish calls with ErrClosed, and stops the engine after it has written everything it acknowledged.
func (b *EmbeddedBroker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		var consumers []*embeddedConsumer
		for _, cur := range b.cursors {
			cur.mu.Lock()
			for c := range cur.consumers {
				consumers = append(consumers, c)
			}
			cur.mu.Unlock()
		}
		b.mu.Unlock()
		for _, c := range consumers {
			_ = c.Close()
		}
		close(b.stopPositions)
		<-b.positionsDone
		if err := b.checkpointPositions(); err != nil {
			b.log.Warn("embedded broker: subscription positions not saved at close; the next start delivers more again", "err", err)
		}
		close(b.closed)
		b.closeErr = b.shutdown()
	})
	return b.closeErr
}

func (b *EmbeddedBroker) shutdown() error {
	var errs []error
	for _, nc := range []*nats.Conn{b.subConn, b.pubConn} {
		if nc == nil {
			continue
		}
		if err := nc.Drain(); err != nil {
			// Closed already, or reconnecting with nothing to drain to.
			nc.Close()
			if !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionReconnecting) {
				errs = append(errs, err)
			}
		}
	}
	for _, nc := range []*nats.Conn{b.subConn, b.pubConn} {
		if nc != nil {
			waitConnClosed(nc)
		}
	}
	b.server.Shutdown()
	b.server.WaitForShutdown()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close embedded broker: %w", err)
	}
	return nil
}

func waitConnClosed(nc *nats.Conn) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if nc.IsClosed() {
		return
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		nc.Close()
	}
}

// EnsureTopic creates the topic's stream or updates its retention. Partitions live inside the batches, so
// growing them needs no engine change; the count is kept in the stream metadata and never shrinks.
func (b *EmbeddedBroker) EnsureTopic(ctx context.Context, ref TopicRef) error {
	if b.isClosed() {
		return ErrClosed
	}
	if ref.Partitions < 1 {
		return fmt.Errorf("ensure topic %q: partitions must be at least 1, got %d", ref.Name, ref.Partitions)
	}
	names := topicNames(ref)
	cfg := jetstream.StreamConfig{
		Name:        names.stream,
		Description: truncate("PDS topic "+ref.Name, 4096),
		Subjects:    names.streamSubjects(),
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      b.opts.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Metadata:    map[string]string{metaPartitions: strconv.Itoa(ref.Partitions), metaTenant: ref.TenantID, metaTopicID: ref.ID},
		// Subscriptions behind the topic's feed read the store in batches (direct gets).
		AllowDirect: true,
	}
	for range 3 {
		stream, err := b.js.Stream(ctx, names.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = b.js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue // created concurrently: compare with what won
			}
			if err != nil {
				return fmt.Errorf("ensure topic %q: create stream: %w", ref.Name, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("ensure topic %q: %w", ref.Name, err)
		}
		current := stream.CachedInfo().Config
		have, _ := strconv.Atoi(current.Metadata[metaPartitions])
		if have >= ref.Partitions && current.MaxAge == cfg.MaxAge && current.Description == cfg.Description &&
			slices.Equal(current.Subjects, cfg.Subjects) && current.AllowDirect {
			return nil
		}
		cfg.Metadata[metaPartitions] = strconv.Itoa(max(have, ref.Partitions))
		updated := current
		updated.MaxAge = cfg.MaxAge
		updated.Description = cfg.Description
		updated.Metadata = cfg.Metadata
		// Streams created before records were routed by workflow take only the single-token subjects.
		updated.Subjects = cfg.Subjects
		updated.AllowDirect = true
		if _, err := b.js.UpdateStream(ctx, updated); err != nil {
			return fmt.Errorf("ensure topic %q: update stream: %w", ref.Name, err)
		}
		return nil
	}
	return fmt.Errorf("ensure topic %q: stream kept changing concurrently", ref.Name)
}

// DeleteTopic removes the topic's stream, which removes its records and subscriptions.
func (b *EmbeddedBroker) DeleteTopic(ctx context.Context, ref TopicRef) error {
	if b.isClosed() {
		return ErrClosed
	}
	names := topicNames(ref)
	if err := b.js.DeleteStream(ctx, names.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete topic %q: %w", ref.Name, err)
	}
	b.mu.Lock()
	var gone []*subscriptionCursor
	for key, cur := range b.cursors {
		if strings.HasPrefix(key, names.stream+"/") {
			gone = append(gone, cur)
			delete(b.cursors, key)
		}
	}
	// A topic created again with this id gets a batcher that checks its stream's subjects afresh, and a
	// feed that starts from its stream's state.
	delete(b.writers, names.stream)
	delete(b.feeds, names.stream)
	b.mu.Unlock()
	for _, cur := range gone {
		cur.markGone()
	}
	b.positions.removeIf(func(key string) bool { return strings.HasPrefix(key, names.stream+"/") })
	if err := b.positions.save(); err != nil {
		b.log.Warn("embedded broker: positions of a deleted topic's subscriptions not forgotten yet", "topic", ref.Name, "err", err)
	}
	return nil
}

// DeleteSubscription forgets the subscription's position, and removes the JetStream consumer an earlier
// version may have kept for it.
func (b *EmbeddedBroker) DeleteSubscription(ctx context.Context, sub SubscriptionRef) error {
	if b.isClosed() {
		return ErrClosed
	}
	names := topicNames(sub.Topic)
	durable := consumerName(sub)
	key := names.stream + "/" + durable
	done, err := b.beginCursorChange(ctx, key)
	if err != nil {
		return fmt.Errorf("delete subscription %s: %w", sub.ID, err)
	}
	defer b.endCursorChange(key, done)
	err = b.js.DeleteConsumer(ctx, names.stream, durable)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete subscription %s: %w", sub.ID, err)
	}
	b.mu.Lock()
	cur := b.cursors[key]
	delete(b.cursors, key)
	b.mu.Unlock()
	if cur != nil {
		cur.markGone()
	}
	b.positions.removeIf(func(k string) bool { return k == key })
	if err := b.positions.save(); err != nil {
		b.log.Warn("embedded broker: position of a deleted subscription not forgotten yet", "subscription", sub.ID, "err", err)
	}
	return nil
}

const (
	metaPartitions = "pds_partitions"
	metaTenant     = "pds_tenant"
	metaTopicID    = "pds_topic_id"
)

// engineNames are the JetStream names of one topic.
type engineNames struct {
	stream        string // PDS_<tenant>_<topic>
	subjectPrefix string // pds.<tenant>.<topic>
}

func topicNames(ref TopicRef) engineNames {
	tenant, topic := engineToken(ref.TenantID), engineToken(ref.ID)
	return engineNames{
		stream:        "PDS_" + tenant + "_" + topic,
		subjectPrefix: "pds." + tenant + "." + topic,
	}
}

// Subjects of a topic's stream. Partitions and target workflows travel inside the batches:
//
//	<prefix>.all          every record, in frames of version 3 or 4; before version 3, the records with no
//	                      target workflows
//	<prefix>.w.<token>    before frame version 3, the records targeting the workflow whose engineToken is
//	                      token, one copy per target workflow; still read
//	<prefix>.records      every record, as written before records were routed by workflow; still read
//
// Workflow subjects sit one token deeper than the others, so no workflow name can take the topic subject,
// and "<prefix>.*" matches the topic and legacy subjects together. engineToken keeps distinct names
// distinct except where a name is crafted to equal another's hashed token; such workflows share a subject,
// which only costs their consumers records they skip.
func (n engineNames) topicSubject() string {
	return n.subjectPrefix + ".all"
}

func (n engineNames) legacySubject() string {
	return n.subjectPrefix + ".records"
}

func (n engineNames) workflowSubject(workflow string) string {
	return n.subjectPrefix + ".w." + engineToken(workflow)
}

func (n engineNames) streamSubjects() []string {
	return []string{n.subjectPrefix + ".*", n.subjectPrefix + ".w.*"}
}

func consumerName(sub SubscriptionRef) string {
	return "sub_" + engineToken(sub.ID)
}

// engineToken makes s usable inside JetStream stream, consumer and bucket names and subject tokens
// (letters, digits, '-' and '_'). UUIDs pass unchanged; anything else that had to change gets a hash
// suffix so distinct inputs keep distinct names.
func engineToken(s string) string {
	clean := true
	for _, r := range s {
		if !isEngineRune(r) {
			clean = false
			break
		}
	}
	if clean && s != "" && len(s) <= 64 {
		return s
	}
	var sb strings.Builder
	for _, r := range s {
		if sb.Len() >= 32 {
			break
		}
		if isEngineRune(r) {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(s))
	return sb.String() + "_" + hex.EncodeToString(sum[:8])
}

func isEngineRune(r rune) bool {
	return r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// natsLogger forwards the engine's log lines to slog; debug and trace output stays off.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  {}
