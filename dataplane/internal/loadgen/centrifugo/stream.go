package centrifugo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge-go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// OpenStream implements loadgen.System: one WebSocket connection (like one PDS stream) subscribed to the
// stream's channels. It returns once Centrifugo confirmed every subscription. The client reconnects and
// resubscribes by itself after a disconnect; what was published meanwhile is lost (no recovery).
func (s *System) OpenStream(ctx context.Context, subscription, stream int,
	deliver func(loadgen.Delivery)) (loadgen.Stream, error) {
	p, err := s.currentPlan()
	if err != nil {
		return nil, err
	}
	if subscription < 0 || subscription >= len(p.channels) {
		return nil, fmt.Errorf("centrifugo: no subscription %d (the topology has %d)", subscription, len(p.channels))
	}
	if stream < 0 || stream >= len(p.channels[subscription]) {
		return nil, fmt.Errorf("centrifugo: subscription %d has no stream %d (it has %d)",
			subscription, stream, len(p.channels[subscription]))
	}
	spec := p.topology.Subscriptions[subscription]
	channels := p.streamChannels(subscription, stream)
	logger := s.logger.With("subscription", spec.Name, "stream", stream)

	decodeSeq := seqFromProtobuf
	if s.opts.Payload == PayloadJSON {
		decodeSeq = seqFromJSON
	}
	onPublication := func(e centrifuge.PublicationEvent) {
		receivedAt := time.Now()
		seq, err := decodeSeq(e.Data)
		if err != nil {
			logger.Error("undecodable publication", "error", err)
			return
		}
		deliver(loadgen.Delivery{Subscription: subscription, Stream: stream, Seq: seq, ReceivedAt: receivedAt})
		if spec.ProcessingDelay > 0 {
			// The slow subscriber: the client's callbacks run one at a time, so this holds up the next event.
			time.Sleep(spec.ProcessingDelay)
		}
	}

	client := centrifuge.NewProtobufClient(s.opts.WebSocketURL, centrifuge.Config{Name: "pds-load"})
	st := &clientStream{client: client, ended: make(chan struct{})}
	pending := make(chan struct{}, len(channels))
	for _, channel := range channels {
		sub, err := client.NewSubscription(channel)
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("centrifugo: subscription %q stream %d: %w", spec.Name, stream, err)
		}
		var once sync.Once
		sub.OnPublication(onPublication)
		sub.OnSubscribed(func(centrifuge.SubscribedEvent) { once.Do(func() { pending <- struct{}{} }) })
		// Once attached, a stream that stops receiving shows in the run as loss; the log says why.
		sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) {
			if st.end(fmt.Errorf("unsubscribed from %s by the server: code %d, %s", channel, e.Code, e.Reason)) {
				logger.Warn("stream unsubscribed; it receives nothing more", "channel", channel, "code", e.Code, "reason", e.Reason)
			}
		})
		sub.OnError(func(e centrifuge.SubscriptionErrorEvent) { st.setLastError(e.Error) })
		if err := sub.Subscribe(); err != nil {
			client.Close()
			return nil, fmt.Errorf("centrifugo: subscribe %q stream %d to %s: %w", spec.Name, stream, channel, err)
		}
	}
	client.OnError(func(e centrifuge.ErrorEvent) { st.setLastError(e.Error) })
	client.OnDisconnected(func(e centrifuge.DisconnectedEvent) {
		if st.end(fmt.Errorf("disconnected: code %d, %s", e.Code, e.Reason)) {
			logger.Warn("stream disconnected for good; it receives nothing more", "code", e.Code, "reason", e.Reason)
		}
	})
	client.OnConnecting(func(e centrifuge.ConnectingEvent) {
		// Code 0 is the first connect; anything else is a reconnect after the connection dropped (a slow
		// client is disconnected when its queue overflows), and events published meanwhile are lost.
		if e.Code != 0 && !st.isClosed() {
			logger.Warn("stream reconnecting; events published meanwhile are lost", "code", e.Code, "reason", e.Reason)
		}
	})
	if err := client.Connect(); err != nil {
		client.Close()
		return nil, fmt.Errorf("centrifugo: connect %q stream %d: %w", spec.Name, stream, err)
	}
	for range channels {
		select {
		case <-pending:
		case <-st.ended:
			client.Close()
			return nil, fmt.Errorf("centrifugo: subscribe %q stream %d to %v: %w", spec.Name, stream, channels, st.err())
		case <-ctx.Done():
			client.Close()
			return nil, fmt.Errorf("centrifugo: subscribe %q stream %d to %v: %w (last error: %v)",
				spec.Name, stream, channels, ctx.Err(), st.err())
		}
	}
	st.markAttached()
	return st, nil
}

// clientStream is one attached stream.
type clientStream struct {
	client *centrifuge.Client

	mu       sync.Mutex
	attached bool
	closed   bool
	ended    chan struct{}
	endErr   error
	lastErr  error
}

func (c *clientStream) markAttached() {
	c.mu.Lock()
	c.attached = true
	c.mu.Unlock()
}

// end records why the stream stopped (the first reason only) and reports whether that stop is news to the
// run: the stream had been attached and was not closed by Close.
func (c *clientStream) end(err error) (unexpected bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endErr == nil {
		c.endErr = err
		close(c.ended)
	}
	return c.attached && !c.closed
}

func (c *clientStream) setLastError(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func (c *clientStream) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.endErr, c.lastErr)
}

func (c *clientStream) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close disconnects the stream's client.
func (c *clientStream) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.client.Close()
	return nil
}

// eventIDField is event_id's field number in PortfolioDistribution.
const eventIDField protowire.Number = 1

// seqFromProtobuf recovers the load tool's sequence number from a PortfolioDistribution's protobuf encoding,
// reading only its event_id field (the receiving side's cost is part of the run).
func seqFromProtobuf(data []byte) (uint64, error) {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return 0, fmt.Errorf("decode publication: %w", protowire.ParseError(n))
		}
		data = data[n:]
		if num == eventIDField && typ == protowire.BytesType {
			id, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return 0, fmt.Errorf("decode publication's event_id: %w", protowire.ParseError(n))
			}
			return loadgen.SeqFromEventID(string(id))
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return 0, fmt.Errorf("decode publication's field %d: %w", num, protowire.ParseError(n))
		}
		data = data[n:]
	}
	return 0, errors.New("decode publication: it has no event_id")
}

// eventIDKey starts the event_id member of a portfolio_distributed event's JSON.
var eventIDKey = []byte(`"event_id"`)

// seqFromJSON recovers the load tool's sequence number from a portfolio_distributed event's JSON. The
// event_id is its first member: a scan finds it without decoding the whole event; anything unexpected falls
// back to a full JSON decode.
func seqFromJSON(data []byte) (uint64, error) {
	if id, ok := scanEventID(data); ok {
		return loadgen.SeqFromEventID(id)
	}
	var ev struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return 0, fmt.Errorf("decode publication (%d bytes): %w", len(data), err)
	}
	return loadgen.SeqFromEventID(ev.EventID)
}

// scanEventID returns the value of the first "event_id" member when it is a string without escapes.
// (protojson puts whitespace between tokens at random, so spaces are allowed around the colon.)
func scanEventID(data []byte) (string, bool) {
	i := bytes.Index(data, eventIDKey)
	if i < 0 {
		return "", false
	}
	rest := skipSpace(data[i+len(eventIDKey):])
	if len(rest) == 0 || rest[0] != ':' {
		return "", false
	}
	rest = skipSpace(rest[1:])
	if len(rest) == 0 || rest[0] != '"' {
		return "", false
	}
	rest = rest[1:]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", false
	}
	return string(rest[:end]), true
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
