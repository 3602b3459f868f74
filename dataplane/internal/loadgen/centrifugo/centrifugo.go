// Package centrifugo is the load tool's peer system: Centrifugo (a PUB/SUB server) fed the same events
// through its HTTP API and delivering them over WebSocket to as many subscriber streams as PDS has.
//
// How the topology maps onto Centrifugo, and why:
//   - Every subscription gets its own channels, named from the run id. Centrifugo filters nothing for the
//     publisher (its tags filter is evaluated per subscriber, not per channel), so the publisher does the
//     routing PDS does on its server: an event goes to the channel of every subscription whose spec matches
//     it (workflow, then filter). That work is done in the load tool's process, not in Centrifugo's.
//   - A subscription with several streams gets one channel per stream, and an event goes to the channel
//     its routing key hashes to (routing.Partition, the hash PDS's partitioning uses). Centrifugo has no
//     shared consumption: every subscriber of a channel receives every publication. Sharing one channel
//     would make each stream receive each event (n times the deliveries PDS makes, all reported as
//     duplicates); a channel per stream does the same work PDS does (one delivery per event and
//     subscription, order kept per routing key), which is the fairer comparison.
//   - When every subscription has one stream, every stream also subscribes to one shared channel, and an
//     event that every subscription matches (scenario fanout) is published once, to that channel: how
//     Centrifugo serves "every event to N subscribers" in practice (encode once, write to N connections),
//     rather than N publications. A stream then receives from two channels, whose relative order Centrifugo
//     does not keep. Options.ChannelPerSubscriptionOnly turns this off.
//   - An event meant for one channel is a publish command, for several a broadcast command; a Publish call
//     is one sequential batch request (POST {APIURL}/batch), so a channel sees events in publish order.
//   - The payload is, by default, the event's protobuf encoding: the bytes every other system of the load
//     tool carries (PDS's gRPC streams, raw Pulsar, the engine alone), sent as b64data. PayloadJSON sends
//     the portfolio_distributed JSON PDS's JSON subscribers receive instead, at a price paid by the load
//     tool (see PayloadJSON). Streams use Centrifugo's protobuf client protocol (its fastest), in which
//     either payload travels as opaque bytes.
//   - Centrifugo keeps nothing: no history, no recovery, no acknowledgements. Delivery is at most once from
//     memory; a stream that falls behind by more than the server's client queue limit is disconnected and
//     what it missed is lost (the harness counts it). MaxInFlight has no meaning here.
//   - Channels vanish when their last subscriber leaves: Cleanup has nothing to delete.
package centrifugo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Options says where a running Centrifugo is (deploy/scripts/centrifugo.sh start prints these values).
type Options struct {
	// APIURL is the HTTP API's base URL, e.g. http://127.0.0.1:8000/api. Required.
	APIURL string
	// APIKey is the HTTP API key (sent as X-API-Key). Required.
	APIKey string
	// WebSocketURL is the client endpoint, e.g. ws://127.0.0.1:8000/connection/websocket. Required.
	WebSocketURL string
	// Pid is the server's process id, whose CPU time and peak memory the report shows; 0 = unknown (the
	// server is then not reported).
	Pid int
	// RequestTimeout bounds one HTTP API request; 0 = 30 s.
	RequestTimeout time.Duration
	// Logger receives stream disconnects and undecodable publications; nil = slog.Default().
	Logger *slog.Logger
	// Payload is what a publication carries; the zero value is PayloadProtobuf.
	Payload Payload
	// ChannelPerSubscriptionOnly publishes an event that every subscription matches to each subscription's
	// channel too, instead of once to the shared channel (see the package doc). False = use the shared one.
	ChannelPerSubscriptionOnly bool
}

// Payload is the encoding of the event a publication carries.
type Payload int

const (
	// PayloadProtobuf is proto.Marshal of the event, base64-encoded into the request: about 2 µs of the
	// load tool's CPU per event (BenchmarkBuildBatch).
	PayloadProtobuf Payload = iota
	// PayloadJSON is the portfolio_distributed event in common/jsoncodec's JSON: about 20 µs of CPU per
	// event (protojson), so at 100K events/s encoding alone takes two cores, all this project's machines
	// have, and the load tool starves the server it measures.
	PayloadJSON
)

func (p Payload) String() string {
	switch p {
	case PayloadProtobuf:
		return "protobuf"
	case PayloadJSON:
		return "json"
	default:
		return fmt.Sprintf("Payload(%d)", int(p))
	}
}

// System is Centrifugo as a loadgen.System. Prepare must return before OpenStream or NewPublisher is called.
type System struct {
	opts   Options
	logger *slog.Logger
	http   *http.Client
	plan   atomic.Pointer[plan]
}

var _ loadgen.System = (*System)(nil)

// New returns the system for the Centrifugo that opts points at. It connects to nothing until Prepare.
func New(opts Options) *System {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Publishers may run concurrently: keep a connection per publisher instead of reopening them.
	transport.MaxIdleConnsPerHost = 64
	transport.DisableCompression = true
	return &System{
		opts:   opts,
		logger: logger.With("system", "centrifugo"),
		http:   &http.Client{Transport: transport, Timeout: opts.RequestTimeout},
	}
}

// Name implements loadgen.System.
func (s *System) Name() string { return "centrifugo" }

// plan is the topology and the channels of every stream of every subscription.
type plan struct {
	topology loadgen.Topology
	// channels[subscription][stream]
	channels [][]string
	// everyone is the channel every stream subscribes to as well, for events every subscription matches;
	// empty when not used (a subscription has several streams, or ChannelPerSubscriptionOnly).
	everyone string
}

// Prepare checks the options and that the API accepts the key, and names the channels. Centrifugo creates
// a channel on first use, so nothing is created on the server.
func (s *System) Prepare(ctx context.Context, topology loadgen.Topology) error {
	if err := s.checkOptions(); err != nil {
		return err
	}
	if len(topology.Subscriptions) == 0 {
		return errors.New("centrifugo: the topology has no subscriptions")
	}
	p := &plan{topology: topology, channels: make([][]string, len(topology.Subscriptions))}
	prefix := "pds-load." + channelSafe(topology.RunID)
	singleStreams := true
	for i, spec := range topology.Subscriptions {
		if spec.Streams < 1 {
			return fmt.Errorf("centrifugo: subscription %q has %d streams; want at least 1", spec.Name, spec.Streams)
		}
		singleStreams = singleStreams && spec.Streams == 1
		p.channels[i] = make([]string, spec.Streams)
		for stream := range spec.Streams {
			p.channels[i][stream] = fmt.Sprintf("%s.sub%d.stream%d", prefix, i, stream)
		}
	}
	if singleStreams && len(topology.Subscriptions) > 1 && !s.opts.ChannelPerSubscriptionOnly {
		p.everyone = prefix + ".everyone"
	}
	if err := s.ping(ctx); err != nil {
		return err
	}
	s.plan.Store(p)
	return nil
}

func (s *System) checkOptions() error {
	var missing []string
	if s.opts.APIURL == "" {
		missing = append(missing, "APIURL")
	}
	if s.opts.APIKey == "" {
		missing = append(missing, "APIKey")
	}
	if s.opts.WebSocketURL == "" {
		missing = append(missing, "WebSocketURL")
	}
	if len(missing) > 0 {
		return fmt.Errorf("centrifugo: options %s are required (deploy/scripts/centrifugo.sh start prints them)",
			strings.Join(missing, ", "))
	}
	if s.opts.Payload != PayloadProtobuf && s.opts.Payload != PayloadJSON {
		return fmt.Errorf("centrifugo: unknown payload %v", s.opts.Payload)
	}
	return nil
}

// ping calls the API's info method, so a wrong URL or key fails Prepare rather than the first Publish.
func (s *System) ping(ctx context.Context) error {
	if _, err := s.post(ctx, "/info", []byte("{}")); err != nil {
		return fmt.Errorf("centrifugo: check the HTTP API: %w", err)
	}
	return nil
}

func (s *System) currentPlan() (*plan, error) {
	p := s.plan.Load()
	if p == nil {
		return nil, errors.New("centrifugo: Prepare has not been called")
	}
	return p, nil
}

// channelsFor appends to dst the channels ev must be published to: the shared channel when every
// subscription matches it and the plan has one, else the channel of every subscription it matches (for a
// subscription with several streams, that of the stream its routing key maps to).
func (p *plan) channelsFor(dst []string, ev *loadgen.Event) []string {
	first := len(dst)
	for i := range p.topology.Subscriptions {
		spec := &p.topology.Subscriptions[i]
		if !spec.Matches(ev) {
			continue
		}
		streams := p.channels[i]
		dst = append(dst, streams[routing.Partition(ev.RoutingKey, len(streams))])
	}
	if p.everyone != "" && len(dst)-first == len(p.topology.Subscriptions) {
		dst = append(dst[:first], p.everyone)
	}
	return dst
}

// streamChannels are the channels stream of subscription subscribes to.
func (p *plan) streamChannels(subscription, stream int) []string {
	own := p.channels[subscription][stream]
	if p.everyone == "" {
		return []string{own}
	}
	return []string{own, p.everyone}
}

// Processes implements loadgen.System.
func (s *System) Processes() map[string]int {
	if s.opts.Pid <= 0 {
		return map[string]int{}
	}
	return map[string]int{"centrifugo": s.opts.Pid}
}

// Cleanup implements loadgen.System: channels vanish with their subscribers, so only idle HTTP connections
// are closed.
func (s *System) Cleanup(context.Context) error {
	s.http.CloseIdleConnections()
	return nil
}

// channelSafe keeps the characters Centrifugo gives no meaning to in a channel name (":" separates a
// namespace, "#" a user, "$" marks a private channel) and replaces the others with "_".
func channelSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		default:
			return '_'
		}
	}, s)
}
