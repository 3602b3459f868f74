// Package follower makes a data-plane node a raft non-voter of the control plane's replicated
// configuration: it holds the whole config in memory, joins through the control plane's ClusterService,
// and keeps serving with the config it has while the control plane is away.
package follower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/raftnode"
)

// Options configure a Follower.
type Options struct {
	// NodeID is stable per node (e.g. its host name); a restarted node rejoins under the same id. Required.
	NodeID string
	// RaftBindAddr is the host:port the raft transport listens on. Required.
	RaftBindAddr string
	// RaftAdvertiseAddr is the host:port the control plane dials; empty means the listener's address.
	RaftAdvertiseAddr string
	// Cluster is the control plane's ClusterService. Required.
	Cluster pdsv1connect.ClusterServiceClient
	// Logger is required.
	Logger *slog.Logger
	// JoinRetryMin is the first pause after a failed JoinNode; it doubles up to JoinRetryMax. Zero means
	// 100ms.
	JoinRetryMin time.Duration
	// JoinRetryMax caps the pause between JoinNode attempts. Zero means 5s.
	JoinRetryMax time.Duration
}

// Follower is a running non-voter. Its methods are safe for concurrent use.
type Follower struct {
	opts Options
	fsm  *configfsm.FSM
	node *raftnode.Node

	stopJoining context.CancelFunc
	joinDone    chan struct{}
	ready       chan struct{}

	mu         sync.Mutex
	joined     bool
	joinTarget uint64
	lastErr    error
	closed     bool
}

// Start opens the raft node with in-memory stores and begins joining the control plane in the
// background, retrying with backoff until it succeeds or Close is called; the control plane may start
// later than the node.
func Start(opts Options) (*Follower, error) {
	switch {
	case opts.NodeID == "":
		return nil, errors.New("start follower: NodeID is empty")
	case opts.RaftBindAddr == "":
		return nil, errors.New("start follower: RaftBindAddr is empty")
	case opts.Cluster == nil:
		return nil, errors.New("start follower: Cluster is nil")
	case opts.Logger == nil:
		return nil, errors.New("start follower: Logger is nil")
	}
	if opts.JoinRetryMin <= 0 {
		opts.JoinRetryMin = 100 * time.Millisecond
	}
	if opts.JoinRetryMax <= 0 {
		opts.JoinRetryMax = 5 * time.Second
	}
	fsm := configfsm.New(filter.Compiler)
	node, err := raftnode.Open(raftnode.Options{
		NodeID:        opts.NodeID,
		BindAddr:      opts.RaftBindAddr,
		AdvertiseAddr: opts.RaftAdvertiseAddr,
		Dir:           "", // in-memory: a data-plane node keeps no state of its own
		FSM:           fsm,
		Logger:        opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("start follower %q: open raft node: %w", opts.NodeID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Follower{
		opts:        opts,
		fsm:         fsm,
		node:        node,
		stopJoining: cancel,
		joinDone:    make(chan struct{}),
		ready:       make(chan struct{}),
	}
	if f.opts.RaftAdvertiseAddr == "" {
		f.opts.RaftAdvertiseAddr = string(node.Addr())
	}
	go f.join(ctx)
	return f, nil
}

// FSM is the node's replicated configuration.
func (f *Follower) FSM() *configfsm.FSM { return f.fsm }

// ReadyC is closed once the node has joined and applied the config version the control plane had then.
func (f *Follower) ReadyC() <-chan struct{} { return f.ready }

// Ready reports readiness for /readyz: ready once joined and caught up, and ready from then on even while
// the control plane is away (the node serves with the config it has). reason says what is missing.
func (f *Follower) Ready() (ready bool, configVersion uint64, reason string) {
	version := f.fsm.Current().Version
	select {
	case <-f.ready:
		return true, version, ""
	default:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return false, version, "shutting down"
	case !f.joined && f.lastErr != nil:
		return false, version, fmt.Sprintf("joining the control plane: %v", f.lastErr)
	case !f.joined:
		return false, version, "joining the control plane"
	default:
		return false, version, fmt.Sprintf("catching up with the configuration: applied version %d of %d", version, f.joinTarget)
	}
}

// join calls JoinNode until it succeeds, then waits for the FSM to reach the version it returned.
func (f *Follower) join(ctx context.Context) {
	defer close(f.joinDone)
	pause := f.opts.JoinRetryMin
	for attempt := 1; ; attempt++ {
		resp, err := f.opts.Cluster.JoinNode(ctx, connect.NewRequest(&pdsv1.JoinNodeRequest{
			NodeId:      f.opts.NodeID,
			RaftAddress: f.opts.RaftAdvertiseAddr,
		}))
		if err == nil {
			target := resp.Msg.GetConfigVersion()
			f.mu.Lock()
			f.joined, f.joinTarget, f.lastErr = true, target, nil
			f.mu.Unlock()
			f.opts.Logger.Info("joined the control plane", "node_id", f.opts.NodeID, "attempts", attempt, "config_version", target)
			if _, err := f.fsm.WaitForVersion(ctx, target); err != nil {
				return
			}
			close(f.ready)
			f.opts.Logger.Info("configuration caught up", "config_version", f.fsm.Current().Version)
			return
		}
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		f.lastErr = err
		f.mu.Unlock()
		level := slog.LevelInfo
		if attempt%10 == 0 {
			level = slog.LevelWarn
		}
		f.opts.Logger.Log(ctx, level, "join the control plane failed; retrying", "node_id", f.opts.NodeID, "attempt", attempt, "retry_in", pause.String(), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, f.opts.JoinRetryMax)
	}
}

// Close leaves the cluster (best effort, bounded by ctx) and shuts the raft node down.
func (f *Follower) Close(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	joined := f.joined
	f.mu.Unlock()

	f.stopJoining()
	<-f.joinDone
	if joined {
		if _, err := f.opts.Cluster.LeaveNode(ctx, connect.NewRequest(&pdsv1.LeaveNodeRequest{NodeId: f.opts.NodeID})); err != nil {
			f.opts.Logger.Warn("leave the control plane failed; it keeps the node until removed", "node_id", f.opts.NodeID, "error", err)
		}
	}
	if err := f.node.Shutdown(); err != nil {
		return fmt.Errorf("close follower %q: shut down raft: %w", f.opts.NodeID, err)
	}
	return nil
}
