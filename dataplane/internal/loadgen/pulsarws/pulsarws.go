// Package pulsarws is the load tool's baseline on Pulsar's own WebSocket API (ws://web-service/ws/v2/):
// the same events and topology as PDS on its Pulsar driver, sent and received as the WebSocket API's JSON
// messages, so PDS's throughput and latency can be read against the push path Pulsar ships.
//
// Settings, the WebSocket API's fast path:
//   - Prepare creates tenant "load-<RunID>", namespace "bench", the partitioned topic and one durable
//     subscription per SubscriptionSpec at the earliest message (pulsarsetup, shared with pulsarraw).
//   - One producer connection per Publisher: batchingEnabled=true, batchingMaxPublishDelay=1 (ms),
//     hashingScheme=Murmur3_32Hash, so each keyed message goes to the partition PDS picks (the same
//     murmur3 as routing.Partition). The WebSocket proxy's producer uses Pulsar's default batch builder,
//     not the key-based one PDS's driver and pulsarraw use: a batch may hold several keys, and Key_Shared
//     dispatches it whole by one of them. Every message still reaches its subscription once; only the
//     per-key order across streams may differ. Each event is one text frame, JSON {payload (base64 of the
//     protobuf encoding), properties (as PDS writes them), key, context}; Publish writes them all, then
//     waits for every ack, matched by context.
//   - One consumer connection per stream: subscriptionType=Key_Shared, receiverQueueSize=1000 (the
//     client default, as in pulsarraw), push mode. The filter decides from the message properties without
//     decoding the payload; each message, kept or filtered out, is acknowledged with {"messageId": …}.
package pulsarws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pulsarsetup"
)

// Settings of the WebSocket producers and consumers (see the package comment).
const (
	batchingMaxPublishDelayMillis = 1
	receiverQueueSize             = 1000
	// readLimit bounds one WebSocket message; events are a few hundred bytes, base64 and JSON included.
	readLimit = 1 << 20
)

// Options configure New.
type Options struct {
	// ServiceURL is the binary protocol endpoint; unused by the WebSocket path, kept so every Pulsar system
	// is configured alike.
	ServiceURL string
	// AdminURL is the web service endpoint, e.g. http://127.0.0.1:8080: its admin API prepares the run and
	// its /ws/v2/ path serves the WebSocket API. Required.
	AdminURL string
	// Processes are the server processes to measure beside the load tool (e.g. "pulsar": pid). Nil means
	// none.
	Processes map[string]int
}

// System is the WebSocket API baseline. Create it with New.
type System struct {
	opts Options

	mu       sync.Mutex
	admin    *pulsarsetup.Admin
	wsBase   string // ws://host:port/ws/v2
	topology loadgen.Topology
	names    pulsarsetup.Names
	prepared bool
	conns    map[*websocket.Conn]struct{} // open producer and consumer connections, closed by Cleanup
}

var _ loadgen.System = (*System)(nil)

// New returns the baseline; it connects in Prepare.
func New(opts Options) loadgen.System {
	return &System{opts: opts, conns: map[*websocket.Conn]struct{}{}}
}

// Name implements loadgen.System.
func (s *System) Name() string { return "pulsar-ws" }

// Processes implements loadgen.System.
func (s *System) Processes() map[string]int { return s.opts.Processes }

// Prepare creates the run's tenant, namespace, topic and subscriptions.
func (s *System) Prepare(ctx context.Context, topology loadgen.Topology) error {
	wsBase, err := webSocketBase(s.opts.AdminURL)
	if err != nil {
		return fmt.Errorf("pulsar-websocket: %w", err)
	}
	admin, err := pulsarsetup.NewAdmin(s.opts.AdminURL)
	if err != nil {
		return fmt.Errorf("pulsar-websocket: %w", err)
	}
	s.mu.Lock()
	s.admin, s.wsBase, s.topology = admin, wsBase, topology
	s.names = pulsarsetup.NamesOf(topology)
	s.prepared = true
	s.mu.Unlock()
	if _, err := admin.Prepare(ctx, topology); err != nil {
		return fmt.Errorf("pulsar-websocket: %w", err)
	}
	return nil
}

// webSocketBase turns the web service URL into the WebSocket API's base URL.
func webSocketBase(adminURL string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("web service URL %q is not an absolute http(s) URL", adminURL)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("web service URL %q: scheme %q (want http or https)", adminURL, u.Scheme)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/ws/v2"
	u.RawQuery = ""
	return u.String(), nil
}

// Cleanup closes every connection still open and deletes what Prepare created.
func (s *System) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	if !s.prepared {
		s.mu.Unlock()
		return nil
	}
	s.prepared = false
	conns := s.conns
	s.conns = map[*websocket.Conn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.CloseNow()
	}
	if err := s.admin.Cleanup(ctx, s.names); err != nil {
		return fmt.Errorf("pulsar-websocket: %w", err)
	}
	return nil
}

// dial opens a WebSocket to path (below /ws/v2) and tracks it for Cleanup.
func (s *System) dial(ctx context.Context, path string, query url.Values) (*websocket.Conn, error) {
	s.mu.Lock()
	if !s.prepared {
		s.mu.Unlock()
		return nil, errors.New("pulsar-websocket: not prepared")
	}
	target := s.wsBase + path + "?" + query.Encode()
	s.mu.Unlock()
	conn, _, err := websocket.Dial(ctx, target, nil)
	if err != nil {
		return nil, fmt.Errorf("pulsar-websocket: dial %s: %w", target, err)
	}
	conn.SetReadLimit(readLimit)
	s.mu.Lock()
	s.conns[conn] = struct{}{}
	s.mu.Unlock()
	return conn, nil
}

func (s *System) forget(conn *websocket.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
}

// topicPath is the topic's path in WebSocket URLs: persistent/tenant/namespace/topic.
func topicPath(topic string) string {
	return "persistent/" + strings.TrimPrefix(topic, "persistent://")
}

func (s *System) spec(subscription int) (loadgen.SubscriptionSpec, pulsarsetup.Names, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if subscription < 0 || subscription >= len(s.topology.Subscriptions) {
		return loadgen.SubscriptionSpec{}, s.names, fmt.Errorf("pulsar-websocket: subscription %d out of range of %d", subscription, len(s.topology.Subscriptions))
	}
	return s.topology.Subscriptions[subscription], s.names, nil
}

// NewPublisher opens a producer connection on the run's topic.
func (s *System) NewPublisher(ctx context.Context) (loadgen.Publisher, error) {
	s.mu.Lock()
	names := s.names
	s.mu.Unlock()
	query := url.Values{
		"batchingEnabled":         {"true"},
		"batchingMaxPublishDelay": {strconv.Itoa(batchingMaxPublishDelayMillis)},
		"hashingScheme":           {"Murmur3_32Hash"},
	}
	conn, err := s.dial(ctx, "/producer/"+topicPath(names.Topic), query)
	if err != nil {
		return nil, err
	}
	p := &publisher{sys: s, conn: conn, pending: map[uint64]*publishCall{}, stopped: make(chan struct{})}
	go p.readAcks()
	return p, nil
}

// producerMessage is one message sent on a producer connection.
type producerMessage struct {
	Payload    []byte            `json:"payload"` // base64 in JSON
	Properties map[string]string `json:"properties,omitempty"`
	Key        string            `json:"key,omitempty"`
	Context    string            `json:"context"`
}

// producerAck is Pulsar's answer to one producerMessage.
type producerAck struct {
	Result   string `json:"result"`
	ErrorMsg string `json:"errorMsg"`
	Context  string `json:"context"`
}

// publishCall is one Publish waiting for its acks.
type publishCall struct {
	remaining atomic.Int64
	mu        sync.Mutex
	err       error
	done      chan struct{}
}

func (c *publishCall) settle(err error) {
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	if c.remaining.Add(-1) == 0 {
		close(c.done)
	}
}

// publisher is safe for concurrent Publish calls: each message carries a context unique on its
// connection, which its ack echoes.
type publisher struct {
	sys  *System
	conn *websocket.Conn
	next atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*publishCall // by message context
	readErr error                   // why readAcks stopped
	stopped chan struct{}           // closed when readAcks stops
}

func (p *publisher) readAcks() {
	err := p.readLoop()
	p.mu.Lock()
	p.readErr = err
	pending := p.pending
	p.pending = map[uint64]*publishCall{}
	p.mu.Unlock()
	close(p.stopped)
	for _, call := range pending {
		call.settle(fmt.Errorf("pulsar-websocket: producer connection closed before the ack: %w", err))
	}
}

func (p *publisher) readLoop() error {
	for {
		_, data, err := p.conn.Read(context.Background())
		if err != nil {
			return err
		}
		var ack producerAck
		if err := json.Unmarshal(data, &ack); err != nil {
			return fmt.Errorf("decode producer ack %q: %w", data, err)
		}
		id, err := strconv.ParseUint(ack.Context, 10, 64)
		if err != nil {
			return fmt.Errorf("producer ack with context %q, which no message carried", ack.Context)
		}
		p.mu.Lock()
		call, ok := p.pending[id]
		delete(p.pending, id)
		p.mu.Unlock()
		if !ok {
			continue
		}
		if ack.Result != "ok" {
			call.settle(fmt.Errorf("pulsar-websocket: publish refused: %s: %s", ack.Result, ack.ErrorMsg))
		} else {
			call.settle(nil)
		}
	}
}

// Publish writes every event, then waits until Pulsar has acknowledged each of them.
func (p *publisher) Publish(ctx context.Context, events []loadgen.Event) error {
	if len(events) == 0 {
		return nil
	}
	call := &publishCall{done: make(chan struct{})}
	call.remaining.Store(int64(len(events)))
	for i := range events {
		ev := &events[i]
		payload, err := ev.Message.MarshalVT()
		if err != nil {
			return fmt.Errorf("pulsar-websocket: encode event %d: %w", ev.Seq, err)
		}
		id := p.next.Add(1)
		frame, err := json.Marshal(producerMessage{
			Payload: payload, Properties: pulsarsetup.Properties(ev), Key: ev.RoutingKey, Context: strconv.FormatUint(id, 10),
		})
		if err != nil {
			return fmt.Errorf("pulsar-websocket: encode message of event %d: %w", ev.Seq, err)
		}
		p.mu.Lock()
		if p.readErr != nil {
			err := p.readErr
			p.mu.Unlock()
			return fmt.Errorf("pulsar-websocket: producer connection closed: %w", err)
		}
		p.pending[id] = call
		p.mu.Unlock()
		if err := p.conn.Write(ctx, websocket.MessageText, frame); err != nil {
			return fmt.Errorf("pulsar-websocket: send event %d: %w", ev.Seq, err)
		}
	}
	select {
	case <-call.done:
		call.mu.Lock()
		defer call.mu.Unlock()
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the connection. A failed close handshake is not reported: nothing is left to lose once
// Publish calls have returned.
func (p *publisher) Close() error {
	_ = p.conn.Close(websocket.StatusNormalClosure, "")
	<-p.stopped
	p.sys.forget(p.conn)
	return nil
}

// OpenStream opens a Key_Shared consumer connection on the subscription and reads it until Close.
func (s *System) OpenStream(ctx context.Context, subscription, stream int, deliver func(loadgen.Delivery)) (loadgen.Stream, error) {
	spec, names, err := s.spec(subscription)
	if err != nil {
		return nil, err
	}
	sub := names.Subscriptions[subscription]
	query := url.Values{
		"subscriptionType":  {"Key_Shared"},
		"receiverQueueSize": {strconv.Itoa(receiverQueueSize)},
		"consumerName":      {fmt.Sprintf("%s-%d", sub, stream)},
	}
	conn, err := s.dial(ctx, "/consumer/"+topicPath(names.Topic)+"/"+sub, query)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	c := &consumerStream{
		sys: s, conn: conn, spec: spec, deliver: deliver, sub: subscription, stream: stream,
		ctx: rctx, cancel: cancel, stopped: make(chan struct{}),
	}
	go c.run()
	return c, nil
}

// consumerMessage is what a consumer connection pushes; the payload is not decoded.
type consumerMessage struct {
	MessageID  string            `json:"messageId"`
	Properties map[string]string `json:"properties"`
}

// consumerAck acknowledges one message.
type consumerAck struct {
	MessageID string `json:"messageId"`
}

type consumerStream struct {
	sys         *System
	conn        *websocket.Conn
	spec        loadgen.SubscriptionSpec
	deliver     func(loadgen.Delivery)
	sub, stream int

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	stopped   chan struct{}
	closeOnce sync.Once
}

func (c *consumerStream) run() {
	defer close(c.stopped)
	for {
		_, data, err := c.conn.Read(c.ctx)
		if err != nil {
			return // closed, or the connection failed: unacknowledged messages go to the other streams
		}
		now := time.Now()
		var msg consumerMessage
		if err := json.Unmarshal(data, &msg); err != nil || msg.MessageID == "" {
			continue // not a message (Pulsar sends nothing else in push mode)
		}
		// A message that is not an event of this run is settled: nobody counts it.
		if ev, err := pulsarsetup.EventFromProperties(msg.Properties); err == nil && c.spec.Matches(&ev) {
			c.deliver(loadgen.Delivery{Subscription: c.sub, Stream: c.stream, Seq: ev.Seq, ReceivedAt: now})
			if !c.spec.Process(c.ctx) {
				return // closed before acknowledging: Pulsar redelivers it
			}
		}
		ack, _ := json.Marshal(consumerAck{MessageID: msg.MessageID}) // cannot fail: one string field
		if err := c.conn.Write(c.ctx, websocket.MessageText, ack); err != nil {
			return
		}
	}
}

// Close stops reading and closes the connection; Pulsar hands the stream's unacknowledged messages to
// the subscription's other streams.
func (c *consumerStream) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		<-c.stopped
		_ = c.conn.CloseNow()
		c.sys.forget(c.conn)
	})
	return nil
}
