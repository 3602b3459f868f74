// Package replication is the control plane's raft voter and its outbox applier: every admin write commits
// a command to PostgreSQL's config_outbox in the same transaction as the change, and the raft leader
// applies those rows to the raft log in id order. The last applied outbox id is part of the replicated
// state, so a new leader (or a restarted one) resumes exactly after it, never skipping or repeating a row.
package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/raftnode"
	"github.com/pds-platform/pds/controlplane/internal/store"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// OutboxStore is the command store's outbox as the raft leader reads and trims it. Implementations must be
// safe for concurrent use.
type OutboxStore interface {
	// ListOutboxAfter returns up to limit entries with an id above afterID in id order. An entry must never
	// become visible later with an id below one already returned (writers serialise id issue and commit).
	ListOutboxAfter(ctx context.Context, afterID uint64, limit int) ([]store.OutboxEntry, error)
	// PruneOutbox deletes the entries with an id up to and including upToID and reports how many.
	PruneOutbox(ctx context.Context, upToID uint64) (int64, error)
}

var _ OutboxStore = (*store.Store)(nil)

// Deps are the replicator's collaborators; none may be nil.
type Deps struct {
	Outbox OutboxStore
	// FSM is the replicated config this voter applies.
	FSM    *configfsm.FSM
	Logger *slog.Logger
	// Meter records the applier's counters; nil means the global otel meter. Pass the process's own so
	// that several control planes in one test process do not count into each other's registries.
	Meter metric.Meter
}

// Options configure the raft voter and the applier.
type Options struct {
	// NodeID, BindAddr, AdvertiseAddr and Dir are passed to raftnode.Open; Dir is required (a voter keeps
	// its log and snapshots).
	NodeID, BindAddr, AdvertiseAddr, Dir string
	// SnapshotThreshold is the number of raft entries between snapshots. Zero means raft's default, 8192.
	SnapshotThreshold uint64
	// PollInterval is how often the leader looks for outbox rows when nobody called Notify (rows written
	// by another control-plane replica). Zero means 1 s.
	PollInterval time.Duration
	// BatchSize is the most outbox rows read and proposed at once. Zero means 256.
	BatchSize int
	// PruneMargin is how many applied outbox ids are kept below the last applied one, for inspection,
	// unless a raft snapshot already covers them. Zero means 1000.
	PruneMargin uint64
	// ApplyTimeout bounds one raft Apply or Barrier. Zero means 10 s.
	ApplyTimeout time.Duration
	// MaxWait bounds WaitApplied when the caller's context allows longer, so an admin request cannot
	// hang while raft has no leader. Zero means 30 s.
	MaxWait time.Duration
}

func (o *Options) defaults() {
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.PruneMargin == 0 {
		o.PruneMargin = 1000
	}
	if o.ApplyTimeout <= 0 {
		o.ApplyTimeout = 10 * time.Second
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 30 * time.Second
	}
}

// maxRejected bounds the memory of outbox ids the FSM rejected, kept so WaitApplied can fail fast.
const maxRejected = 1024

// Replicator runs the control plane's raft voter and, while it leads, the outbox applier. Its methods
// are safe for concurrent use.
type Replicator struct {
	node    *raftnode.Node
	fsm     *configfsm.FSM
	outbox  OutboxStore
	logger  *slog.Logger
	opts    Options
	covered atomic.Uint64 // highest outbox id a persisted snapshot holds

	notify   chan struct{}
	caughtUp atomic.Bool   // leader only: the last outbox read found nothing left to apply
	proposed atomic.Uint64 // leader only: highest outbox id applied to raft, accepted or rejected

	mu       sync.Mutex
	inFlight uint64            // leader only: the highest outbox id proposed but not yet resolved, or 0
	progress chan struct{}     // closed and replaced when proposed advances
	rejected map[uint64]string // outbox id → the FSM's error

	appliedCounter  metric.Int64Counter
	rejectedCounter metric.Int64Counter
	prunedCounter   metric.Int64Counter

	stop context.CancelFunc
	done chan struct{}
}

// Start opens the raft voter (bootstrapping a single-voter cluster when the directory holds no raft
// state) and starts the applier loop, which runs until ctx ends or Close is called.
func Start(ctx context.Context, deps Deps, opts Options) (*Replicator, error) {
	switch {
	case deps.Outbox == nil:
		return nil, errors.New("start replication: Deps.Outbox is nil")
	case deps.FSM == nil:
		return nil, errors.New("start replication: Deps.FSM is nil")
	case deps.Logger == nil:
		return nil, errors.New("start replication: Deps.Logger is nil")
	case opts.Dir == "":
		return nil, errors.New("start replication: Options.Dir is required for a voter")
	}
	opts.defaults()
	r := &Replicator{
		fsm:      deps.FSM,
		outbox:   deps.Outbox,
		logger:   deps.Logger.With("component", "replication"),
		opts:     opts,
		notify:   make(chan struct{}, 1),
		progress: make(chan struct{}),
		rejected: map[uint64]string{},
		done:     make(chan struct{}),
	}
	if err := r.initMetrics(deps.Meter); err != nil {
		return nil, fmt.Errorf("start replication: %w", err)
	}
	node, err := raftnode.Open(raftnode.Options{
		NodeID:            opts.NodeID,
		BindAddr:          opts.BindAddr,
		AdvertiseAddr:     opts.AdvertiseAddr,
		Dir:               opts.Dir,
		FSM:               trackingFSM{FSM: deps.FSM, covered: &r.covered},
		Logger:            deps.Logger,
		SnapshotThreshold: opts.SnapshotThreshold,
	})
	if err != nil {
		return nil, fmt.Errorf("start replication: %w", err)
	}
	if err := node.BootstrapSingle(); err != nil {
		_ = node.Shutdown()
		return nil, fmt.Errorf("start replication: %w", err)
	}
	r.node = node
	loopCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	go r.run(loopCtx)
	return r, nil
}

func (r *Replicator) initMetrics(meter metric.Meter) error {
	if meter == nil {
		meter = otel.Meter("github.com/pds-platform/pds/controlplane/internal/replication")
	}
	var err error
	if r.appliedCounter, err = meter.Int64Counter("pds.controlplane.outbox.applied",
		metric.WithDescription("Outbox rows applied to the raft log and accepted by the config state machine.")); err != nil {
		return err
	}
	if r.rejectedCounter, err = meter.Int64Counter("pds.controlplane.outbox.rejected",
		metric.WithDescription("Outbox rows the config state machine rejected.")); err != nil {
		return err
	}
	if r.prunedCounter, err = meter.Int64Counter("pds.controlplane.outbox.pruned",
		metric.WithDescription("Outbox rows deleted after they were replicated.")); err != nil {
		return err
	}
	return nil
}

// Node is the raft node, for membership changes.
func (r *Replicator) Node() *raftnode.Node { return r.node }

// Notify wakes the applier, e.g. right after an admin write committed; it never blocks.
func (r *Replicator) Notify() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// WaitApplied blocks until the replicated config holds the outbox entry outboxID, and returns the config
// version (raft index) that holds it. It fails when the config state machine rejected that entry, or
// with a context error when ctx ends or Options.MaxWait passes first (the entry stays committed in the
// outbox and is applied later). It wakes the applier, so callers need not call Notify. Safe for
// concurrent use, on leaders and followers alike.
func (r *Replicator) WaitApplied(ctx context.Context, outboxID uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.MaxWait)
	defer cancel()
	r.Notify()
	for {
		changed, progressed := r.fsm.Changed(), r.progressed()
		reason, rejected, pending := r.verdict(outboxID)
		if rejected {
			return 0, fmt.Errorf("apply outbox entry %d to the replicated config: rejected: %s", outboxID, reason)
		}
		// While the applier still waits for raft's answer on this entry, a later entry may already have
		// moved LastOutboxID past it; only the applier can tell acceptance from rejection then.
		cfg := r.fsm.Current()
		if cfg.LastOutboxID >= outboxID && !pending {
			return cfg.Version, nil
		}
		select {
		case <-changed:
		case <-progressed:
		case <-ctx.Done():
			return 0, fmt.Errorf("wait for outbox entry %d in the replicated config (at %d): %w", outboxID, cfg.LastOutboxID, ctx.Err())
		}
	}
}

// Ready reports whether this control plane serves current config: as leader once the outbox is fully
// applied; as follower once it knows a leader and has applied every committed entry it received.
func (r *Replicator) Ready() (bool, uint64, string) {
	version := r.fsm.Current().Version
	switch state := r.node.Raft.State(); state {
	case raft.Leader:
		if !r.caughtUp.Load() {
			return false, version, "raft leader is applying the outbox"
		}
		return true, version, ""
	case raft.Follower:
		if addr, _ := r.node.Raft.LeaderWithID(); addr == "" {
			return false, version, "no raft leader"
		}
		if r.node.Raft.AppliedIndex() < r.node.Raft.CommitIndex() {
			return false, version, "raft follower is catching up"
		}
		return true, version, ""
	default:
		return false, version, "raft is " + state.String()
	}
}

// Close stops the applier and shuts the raft node down. Later calls return the first call's result.
func (r *Replicator) Close() error {
	r.stop()
	<-r.done
	if err := r.node.Shutdown(); err != nil {
		return fmt.Errorf("close replication: %w", err)
	}
	return nil
}

func (r *Replicator) progressed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress
}

// verdict reports whether the FSM rejected outboxID and whether this node's applier has proposed it
// without knowing the outcome yet.
func (r *Replicator) verdict(outboxID uint64) (reason string, rejected, pending bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, rejected = r.rejected[outboxID]
	pending = outboxID > r.proposed.Load() && outboxID <= r.inFlight
	return reason, rejected, pending
}

// propose marks outbox ids up to last as proposed and unresolved.
func (r *Replicator) propose(last uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = last
}

// abandon clears the unresolved proposals after raft failed them; waiters fall back to the FSM, which
// shows whatever the next leader applies.
func (r *Replicator) abandon() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight = 0
	close(r.progress)
	r.progress = make(chan struct{})
}

// advance records that outbox entries up to id went through raft, remembering a rejection, and wakes
// WaitApplied callers.
func (r *Replicator) advance(id uint64, rejection error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rejection != nil {
		if len(r.rejected) >= maxRejected {
			oldest := id
			for k := range r.rejected {
				oldest = min(oldest, k)
			}
			delete(r.rejected, oldest)
		}
		r.rejected[id] = rejection.Error()
	}
	r.proposed.Store(id)
	close(r.progress)
	r.progress = make(chan struct{})
}

func (r *Replicator) run(ctx context.Context) {
	defer close(r.done)
	ticker := time.NewTicker(r.opts.PollInterval)
	defer ticker.Stop()
	for {
		if r.node.Raft.State() == raft.Leader {
			r.lead(ctx, ticker)
		}
		r.caughtUp.Store(false)
		select {
		case <-ctx.Done():
			return
		case <-r.node.Raft.LeaderCh():
		case <-ticker.C:
		}
	}
}

// lead applies outbox rows while this node leads in one term. The barrier first makes the FSM reflect
// every entry earlier leaders committed, so LastOutboxID is where this term must resume; a later term
// (leadership lost and regained, possibly after another leader applied rows) starts over with a barrier.
func (r *Replicator) lead(ctx context.Context, ticker *time.Ticker) {
	term := r.node.Raft.CurrentTerm()
	if err := r.node.Raft.Barrier(r.opts.ApplyTimeout).Error(); err != nil {
		r.logger.Warn("raft barrier before applying the outbox failed", "error", err)
		return
	}
	next := r.fsm.Current().LastOutboxID
	r.logger.Info("leading: applying outbox", "after_outbox_id", next, "config_version", r.fsm.Current().Version)
	var pruned uint64
	for {
		if ctx.Err() != nil || r.node.Raft.State() != raft.Leader || r.node.Raft.CurrentTerm() != term {
			return
		}
		entries, err := r.outbox.ListOutboxAfter(ctx, next, r.opts.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.Warn("read outbox failed; retrying", "after_outbox_id", next, "error", err)
			}
			r.caughtUp.Store(false)
		} else if len(entries) > 0 {
			last, ok := r.apply(entries)
			next = max(next, last)
			if !ok {
				return
			}
			if len(entries) == r.opts.BatchSize {
				continue // more rows are waiting
			}
		}
		if err == nil {
			r.caughtUp.Store(true)
			pruned = r.prune(ctx, next, pruned)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.notify:
		case <-ticker.C:
		}
	}
}

// apply proposes entries in order (pipelined) and waits for each. It returns the last outbox id that went
// through raft and false when raft failed (leadership lost, shutdown), leaving the rest to the next leader.
func (r *Replicator) apply(entries []store.OutboxEntry) (uint64, bool) {
	r.propose(entries[len(entries)-1].ID)
	futures := make([]raft.ApplyFuture, len(entries))
	for i, e := range entries {
		futures[i] = r.node.Raft.Apply(e.Command, r.opts.ApplyTimeout)
	}
	var last uint64
	for i, f := range futures {
		id := entries[i].ID
		if err := f.Error(); err != nil {
			if !errors.Is(err, raft.ErrRaftShutdown) {
				r.logger.Warn("apply outbox entry to raft failed; the next leader resumes from the replicated position",
					"outbox_id", id, "error", err)
			}
			r.abandon()
			return last, false
		}
		rejection, _ := f.Response().(error)
		if rejection != nil {
			// Deterministic on every node: retrying cannot help, so the applier moves on.
			r.logger.Error("config state machine rejected outbox entry", "outbox_id", id, "raft_index", f.Index(), "error", rejection)
			r.rejectedCounter.Add(context.Background(), 1)
		} else {
			r.appliedCounter.Add(context.Background(), 1)
		}
		last = id
		r.advance(id, rejection)
	}
	return last, true
}

// prune deletes outbox rows a snapshot covers or that lie more than PruneMargin below the last applied
// id, when that moves past what was already pruned this term. It returns the new pruned position.
func (r *Replicator) prune(ctx context.Context, applied, pruned uint64) uint64 {
	target := r.covered.Load()
	if applied > r.opts.PruneMargin {
		target = max(target, applied-r.opts.PruneMargin)
	}
	target = min(target, applied)
	if target <= pruned {
		return pruned
	}
	n, err := r.outbox.PruneOutbox(ctx, target)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.Warn("prune outbox failed", "up_to_outbox_id", target, "error", err)
		}
		return pruned
	}
	r.prunedCounter.Add(ctx, n)
	return target
}
