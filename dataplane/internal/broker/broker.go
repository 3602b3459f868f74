// Package broker is the data plane's one door to the message engine. Each driver (broker_embedded.go, and
// later broker_pulsar.go) passes the conformance suite in conformance_test.go.
package broker

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned by calls on a closed Broker or Consumer.
var ErrClosed = errors.New("broker closed")

// TopicRef names a PDS topic at the broker. ID is the topic's UUID, stable across renames; drivers derive
// engine names from TenantID and ID, never from Name (which may hold characters engines reject).
type TopicRef struct {
	TenantID   string
	ID         string
	Name       string
	Partitions int
}

// SubscriptionRef names a PDS subscription at the broker: one durable engine subscription per ref.
type SubscriptionRef struct {
	TenantID string
	// ID is the subscription's UUID.
	ID    string
	Topic TopicRef
	// StartTime: a subscription that does not exist yet at the broker starts with the events stored at or
	// after this time. Zero means from the earliest stored event.
	StartTime time.Time
	// Workflow is the subscription's subscriber_workflow: a driver that routes (see Broker) may leave out
	// records whose TargetWorkflows do not name it. Empty means the consumer wants every record.
	Workflow string
}

// Record is one event as stored: opaque to the broker apart from its routing fields.
type Record struct {
	// Partition is in [0, TopicRef.Partitions).
	Partition int
	// Key is the routing key; records of one key keep their order within a partition.
	Key     string
	EventID string
	Value   []byte
	// Properties are small string attributes stored beside the value (data type, priority, target
	// workflows, trace context) so the broker and its consumers can route and filter without decoding
	// Value. Optional; nil means none. Drivers that cannot store them deliver nil.
	Properties map[string]string
	// TargetWorkflows is the event's routing.target_workflows: the workflows it is meant for, empty for
	// every workflow. Drivers that route by it (see Broker) use it on Publish; on delivery it may be nil.
	TargetWorkflows []string
}

// AckHandle identifies one delivered record to its Consumer. It is opaque and comparable.
type AckHandle struct {
	// Token is driver-defined, printable (used inside ack ids) and unique per delivered record within the
	// Consumer's subscription.
	Token string
}

// Delivery is one record handed to a consumer.
type Delivery struct {
	Record
	Handle AckHandle
	// Attempt is 1 on first delivery and grows with each redelivery.
	Attempt int
	// PublishTime is when the broker stored the record.
	PublishTime time.Time
}

// Broker stores and delivers records.
//
// Delivery contract: a record for which Publish returned nil survives a crash of the process and of the
// engine's host, and is delivered to every subscription of its topic whose StartTime is not after the
// record's publish time, at least once, until acknowledged. Records of one partition are delivered to a
// consumer in publish order; redelivered records may come after later ones.
//
// Routing by workflow: a driver MAY leave out, for a consumer whose SubscriptionRef.Workflow is W, the
// records whose TargetWorkflows is non-empty and does not contain W; it MUST deliver every other record.
// So a consumer may still receive records meant for other workflows, and its caller keeps checking
// TargetWorkflows itself. A driver that routes names that in its documentation, including any ordering it
// cannot keep for a consumer with an empty Workflow.
//
// All methods are safe for concurrent use.
type Broker interface {
	// EnsureTopic creates the topic if it is missing and grows its partitions to ref.Partitions. Idempotent.
	EnsureTopic(ctx context.Context, ref TopicRef) error
	// DeleteTopic removes the topic, its stored records and its subscriptions. Deleting a missing topic is
	// not an error.
	DeleteTopic(ctx context.Context, ref TopicRef) error
	// Publish stores records durably and returns nil only once every one of them is stored. On error, any
	// subset may have been stored: the caller may retry, and consumers see duplicates by EventID. Drivers
	// batch records of one partition from concurrent calls into one engine write.
	Publish(ctx context.Context, topic TopicRef, records []Record) error
	// Subscribe attaches a consumer to the subscription, creating it at the broker if missing. Several
	// consumers of one subscription, in this or other processes, share its records.
	Subscribe(ctx context.Context, sub SubscriptionRef, opts ConsumerOptions) (Consumer, error)
	// DeleteSubscription removes the durable subscription. Deleting a missing one is not an error.
	DeleteSubscription(ctx context.Context, sub SubscriptionRef) error
	// Close stops the broker; pending Publish calls fail with ErrClosed.
	Close() error
}

// ConsumerOptions tune one consumer.
type ConsumerOptions struct {
	// AckDeadline: a delivered record not acknowledged within it is delivered again. Zero means 30s.
	AckDeadline time.Duration
	// MaxUnacked bounds the records delivered and not yet acknowledged. Zero means 1000.
	MaxUnacked int
}

// Consumer receives a subscription's records. Receive is called from one goroutine; Ack and Nack may be
// called from any goroutine.
type Consumer interface {
	// Receive blocks until at least one record is available, then returns up to max of them. It returns
	// ctx.Err() when ctx ends and ErrClosed after Close.
	Receive(ctx context.Context, max int) ([]Delivery, error)
	// Ack confirms records; each is not delivered again. Unknown or already acknowledged handles are ignored.
	Ack(ctx context.Context, handles ...AckHandle) error
	// Nack asks for the records to be delivered again soon, ahead of their ack deadline.
	Nack(ctx context.Context, handles ...AckHandle) error
	// Close detaches the consumer; its unacknowledged records are delivered again to other consumers
	// without waiting for the ack deadline.
	Close() error
}

// PropertyKeeper is an optional Broker capability: the driver stores Record.Properties with each record.
// Publishers build properties only for drivers that have it, keeping that work off the hot path of the
// others.
type PropertyKeeper interface {
	KeepsProperties()
}

// LatestViews is an optional Broker capability: a compacted table holding the newest value per key, kept
// by the broker so data-plane nodes stay stateless. Find it by type assertion.
type LatestViews interface {
	// PutLatest stores value as the newest for (tenantID, view, key). Unlike Publish, a stored value may
	// be lost in a crash soon after (the embedded driver persists views asynchronously): the next value
	// of the key replaces it anyway.
	PutLatest(ctx context.Context, tenantID, view, key string, value []byte) error
	// GetLatest returns the newest value; ok is false when the key was never put.
	GetLatest(ctx context.Context, tenantID, view, key string) (value []byte, ok bool, err error)
}

// SeekPosition says where a subscription resumes; exactly one of its fields is set.
type SeekPosition struct {
	// Earliest: the oldest record the broker still stores.
	Earliest bool
	// Latest: only records published after the seek.
	Latest bool
	// Time: the first record published at or after it.
	Time time.Time
}

// Seeker is a Broker capability every driver provides (found by type assertion so a driver can be
// written in steps): it moves a durable subscription.
type Seeker interface {
	// Seek moves the subscription, creating it if missing. Records before the position count as
	// acknowledged; records from it on are delivered again, acknowledged or not. Consumers attached
	// during the seek may still receive records from the old position that were already on their way;
	// after Seek returns, new deliveries follow the new position.
	Seek(ctx context.Context, sub SubscriptionRef, pos SeekPosition) error
}

// errSeekPosition is what Seek returns for a SeekPosition with no field or several fields set.
var errSeekPosition = errors.New("seek position: set exactly one of Earliest, Latest and Time")

// validate checks that exactly one field of p is set. Every driver's Seek calls it before touching the
// engine, so a malformed position fails the same way everywhere.
func (p SeekPosition) validate() error {
	set := 0
	if p.Earliest {
		set++
	}
	if p.Latest {
		set++
	}
	if !p.Time.IsZero() {
		set++
	}
	if set != 1 {
		return errSeekPosition
	}
	return nil
}
