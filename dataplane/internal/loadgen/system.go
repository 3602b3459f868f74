// Package loadgen drives publish→receive load through a System (PDS, a baseline with no PDS in the path, or
// a peer) and measures what arrives: latency from the intended send time, throughput, duplicates and loss.
package loadgen

import (
	"context"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// A System is one path events take from a publisher to subscribers. The harness calls Prepare once per
// run, then opens every stream, then publishes; Cleanup removes what Prepare created.
type System interface {
	// Name identifies the system in reports, e.g. "pds-embedded", "pulsar-raw", "centrifugo".
	Name() string
	// Prepare creates what the topology needs (topics, subscriptions, channels) and returns once streams can
	// be opened.
	Prepare(ctx context.Context, topology Topology) error
	// OpenStream attaches stream number stream (0-based) of topology.Subscriptions[subscription] and returns
	// once it is attached and receiving. The system calls deliver for every event the stream receives that
	// matches the subscription (events a baseline filters out on the client side are acknowledged and not
	// reported), from its own goroutines; deliver is cheap and safe for concurrent use. Events are
	// acknowledged as the subscription's spec says. Closing the returned Stream detaches it.
	OpenStream(ctx context.Context, subscription, stream int, deliver func(Delivery)) (Stream, error)
	// NewPublisher returns a publisher; the harness may use several concurrently.
	NewPublisher(ctx context.Context) (Publisher, error)
	// Processes names the server processes serving this system (e.g. "dataplane": pid) whose CPU time and
	// peak memory the report shows beside the load tool's own.
	Processes() map[string]int
	// Cleanup deletes what Prepare created.
	Cleanup(ctx context.Context) error
}

// A Stream is one attached subscriber stream.
type Stream interface {
	Close() error
}

// A Publisher sends events into a System.
type Publisher interface {
	// Publish returns once the system has accepted every event (durably stored, where the system promises
	// that) or with the error that refused them.
	Publish(ctx context.Context, events []Event) error
	Close() error
}

// Event is one generated event with the routing facts the harness uses to decide who must receive it.
type Event struct {
	// Seq numbers events of a run from 0 in the order they are due; EventID carries it (see EventIDFor).
	Seq             uint64
	Topic           string
	RoutingKey      string
	TargetWorkflows []string
	DataType        pdsv1.PortfolioDataType
	Priority        int32
	// Message is the full event as PDS publishes it (300–500 bytes encoded); systems other than PDS send
	// its protobuf or JSON encoding as their payload. It is read-only: events of a run share parts of it
	// (the data of a pool of realistic payloads), and several goroutines may encode it at once.
	Message *pdsv1.PortfolioDistribution
}

// Delivery is one event received by one stream.
type Delivery struct {
	Subscription int
	Stream       int
	// Seq is the event's sequence number, recovered from its event_id with SeqFromEventID.
	Seq uint64
	// ReceivedAt is when the stream had the event in hand (before acknowledging it).
	ReceivedAt time.Time
}

// Topology is what a scenario asks a system to set up.
type Topology struct {
	// RunID is unique per run; systems prefix the names they create with it so runs never collide.
	RunID string
	Topic string
	// DataType is the one data type the topic carries (every event of the run has it); PDS topics need one.
	DataType      pdsv1.PortfolioDataType
	Partitions    int
	Subscriptions []SubscriptionSpec
}

// SubscriptionSpec is one subscription (a workflow) and how its streams consume.
type SubscriptionSpec struct {
	Name string
	// Workflow is the subscriber_workflow: events whose target_workflows is empty or contains it match.
	Workflow string
	// Filter narrows further; nil matches every event the workflow matches.
	Filter *Filter
	// Streams is how many concurrent streams share the subscription's load (Key_Shared).
	Streams     int
	MaxInFlight int
	// ProcessingDelay is how long the subscriber spends on each event before acknowledging it (0 = none): the
	// slow subscriber of scenario (d).
	ProcessingDelay time.Duration
}

// Filter is a subscription filter in PDS's form and as a predicate for systems that filter client side and
// for the harness's own bookkeeping of who must receive what. Both forms must agree.
type Filter struct {
	DataTypes   []pdsv1.PortfolioDataType
	MinPriority int32
	// CEL is the same condition as a CEL expression, for PDS's SubscriptionFilters.cel (empty = none).
	CEL string
}
