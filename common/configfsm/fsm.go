// Package configfsm is PDS's replicated configuration: the raft state machine that control-plane voters
// and data-plane non-voters apply identically, and the immutable Config versions it publishes.
package configfsm

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// FSM applies config commands. Apply, Snapshot and Restore are called by raft from one goroutine; Current,
// Changed and WaitForVersion may be called from any goroutine.
//
// Apply is deterministic: it reads nothing but the command and the current Config, so every node that
// applies the same log holds the same Config.
type FSM struct {
	compile FilterCompiler

	current atomic.Pointer[Config]

	mu      sync.Mutex
	changed chan struct{}
}

var _ raft.FSM = (*FSM)(nil)

type handler func(f *FSM, next *Config, payload []byte) error

// handlers is keyed by the append-only command type.
var handlers = map[configv1.CommandType]handler{
	configv1.CommandType_COMMAND_TYPE_PUT_TOPIC:           (*FSM).applyPutTopic,
	configv1.CommandType_COMMAND_TYPE_DELETE_TOPIC:        (*FSM).applyDeleteTopic,
	configv1.CommandType_COMMAND_TYPE_PUT_SUBSCRIPTION:    (*FSM).applyPutSubscription,
	configv1.CommandType_COMMAND_TYPE_DELETE_SUBSCRIPTION: (*FSM).applyDeleteSubscription,
}

// New returns an empty FSM. compile may be nil when the holder never evaluates filters (the control plane).
func New(compile FilterCompiler) *FSM {
	f := &FSM{compile: compile, changed: make(chan struct{})}
	f.current.Store(emptyConfig())
	return f
}

// Current returns the newest applied Config.
func (f *FSM) Current() *Config { return f.current.Load() }

// Changed returns a channel that is closed when the next Config is published.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// WaitForVersion blocks until the applied Config has at least the given version, or ctx ends.
func (f *FSM) WaitForVersion(ctx context.Context, version uint64) (*Config, error) {
	for {
		changed := f.Changed()
		if c := f.Current(); c.Version >= version {
			return c, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for config version %d (have %d): %w", version, f.Current().Version, ctx.Err())
		}
	}
}

func (f *FSM) publish(c *Config) {
	f.current.Store(c)
	f.mu.Lock()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Apply applies one log entry. Its return value is nil or an error, which raft hands to the proposer.
// A command that fails leaves the Config unchanged except for its version.
func (f *FSM) Apply(entry *raft.Log) any {
	cur := f.Current()
	next := cur.clone()
	next.Version = entry.Index
	if entry.Type != raft.LogCommand {
		f.publish(next)
		return nil
	}
	kind, payload, err := DecodeCommandType(entry.Data)
	if err == nil {
		h, ok := handlers[kind]
		if !ok {
			err = fmt.Errorf("apply config entry %d: unknown command type %d", entry.Index, kind)
		} else {
			err = h(f, next, payload)
		}
	}
	if err != nil {
		// The row is consumed even though it changed nothing, so the outbox applier moves past it and a
		// waiter on it learns of the failure instead of timing out.
		failed := cur.clone()
		failed.Version = entry.Index
		failed.LastOutboxID = max(failed.LastOutboxID, outboxIDOf(payload))
		f.publish(failed)
		return err
	}
	f.publish(next)
	return nil
}

// outboxIDOf reads field 1 (outbox_id, shared by every command message) from a payload that may not
// decode as its command type; 0 when absent.
func outboxIDOf(payload []byte) uint64 {
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return 0
		}
		payload = payload[n:]
		if num == 1 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(payload)
			if m < 0 {
				return 0
			}
			return v
		}
		m := protowire.ConsumeFieldValue(num, typ, payload)
		if m < 0 {
			return 0
		}
		payload = payload[m:]
	}
	return 0
}

func (f *FSM) applyPutTopic(next *Config, payload []byte) error {
	var cmd configv1.PutTopic
	if err := proto.Unmarshal(payload, &cmd); err != nil {
		return fmt.Errorf("decode put topic: %w", err)
	}
	if cmd.GetTopic().GetTopicName() == "" {
		return fmt.Errorf("put topic: topic_name is empty")
	}
	next.putTopic(cmd.GetTopic())
	next.LastOutboxID = max(next.LastOutboxID, cmd.GetOutboxId())
	return nil
}

func (f *FSM) applyDeleteTopic(next *Config, payload []byte) error {
	var cmd configv1.DeleteTopic
	if err := proto.Unmarshal(payload, &cmd); err != nil {
		return fmt.Errorf("decode delete topic: %w", err)
	}
	next.deleteTopic(cmd.GetTenantId(), cmd.GetTopicName())
	next.LastOutboxID = max(next.LastOutboxID, cmd.GetOutboxId())
	return nil
}

func (f *FSM) applyPutSubscription(next *Config, payload []byte) error {
	var cmd configv1.PutSubscription
	if err := proto.Unmarshal(payload, &cmd); err != nil {
		return fmt.Errorf("decode put subscription: %w", err)
	}
	if cmd.GetSubscription().GetSubscriptionId() == "" {
		return fmt.Errorf("put subscription: subscription_id is empty")
	}
	next.putSubscription(f.compileSubscription(cmd.GetSubscription()))
	next.LastOutboxID = max(next.LastOutboxID, cmd.GetOutboxId())
	return nil
}

func (f *FSM) applyDeleteSubscription(next *Config, payload []byte) error {
	var cmd configv1.DeleteSubscription
	if err := proto.Unmarshal(payload, &cmd); err != nil {
		return fmt.Errorf("decode delete subscription: %w", err)
	}
	next.deleteSubscription(cmd.GetTenantId(), cmd.GetSubscriptionId())
	next.LastOutboxID = max(next.LastOutboxID, cmd.GetOutboxId())
	return nil
}

func (f *FSM) compileSubscription(p *pdsv1.Subscription) *Subscription {
	s := &Subscription{Proto: p}
	if f.compile != nil {
		s.Matcher, s.CompileErr = f.compile(p.GetFilters())
		if s.CompileErr != nil {
			s.Matcher = nil
		}
	}
	return s
}

// Snapshot captures the current Config; raft persists it later through the returned snapshot.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{config: f.Current()}, nil
}

// Restore replaces the state with a snapshot's and publishes it.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore config snapshot: read: %w", err)
	}
	var snap configv1.Snapshot
	if err := proto.Unmarshal(data, &snap); err != nil {
		return fmt.Errorf("restore config snapshot: decode: %w", err)
	}
	next := emptyConfig()
	next.Version = snap.GetVersion()
	next.LastOutboxID = snap.GetLastOutboxId()
	for _, t := range snap.GetTopics() {
		next.putTopic(t)
	}
	for _, s := range snap.GetSubscriptions() {
		next.putSubscription(f.compileSubscription(s))
	}
	f.publish(next)
	return nil
}

type snapshot struct{ config *Config }

// Persist writes the captured Config; on failure it cancels the sink so raft discards the snapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	snap := &configv1.Snapshot{
		Version:      s.config.Version,
		LastOutboxId: s.config.LastOutboxID,
		Topics:       s.config.Topics(),
	}
	for _, sub := range s.config.Subscriptions() {
		snap.Subscriptions = append(snap.Subscriptions, sub.Proto)
	}
	data, err := proto.Marshal(snap)
	if err == nil {
		_, err = sink.Write(data)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist config snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
