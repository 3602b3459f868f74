// Package raftnode opens a hashicorp/raft node over TCP for PDS's replicated configuration: durable voters
// on the control plane (bolt log and file snapshots under a directory) and stateless non-voters on the data
// plane (everything in memory, so a restarted node rejoins and catches up from the leader).
package raftnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Options configures Open.
type Options struct {
	// NodeID is the node's stable raft server id. Required.
	NodeID string
	// BindAddr is the host:port the raft TCP transport listens on. Required; port 0 picks a free port.
	BindAddr string
	// AdvertiseAddr is the host:port other nodes dial. Empty means the listener's address, which then must
	// not be an unspecified address such as 0.0.0.0.
	AdvertiseAddr string
	// Dir holds the raft log (raft.db) and snapshots. Empty means in-memory log, stable and snapshot
	// stores: the node keeps no state across restarts (data-plane non-voters).
	Dir string
	// FSM is the replicated state machine. Required.
	FSM raft.FSM
	// Logger receives raft's own log lines. Nil means slog.Default().
	Logger *slog.Logger
	// LogLevel is the lowest raft log level forwarded to Logger. Zero (hclog.NoLevel) means hclog.Warn.
	LogLevel hclog.Level
	// SnapshotThreshold is the number of log entries after which a snapshot is taken (checked every
	// SnapshotInterval). Zero means raft's default, 8192.
	SnapshotThreshold uint64
	// TrailingLogs is the number of log entries kept after a snapshot so lagging followers can catch up
	// from the log instead of a snapshot. Zero means raft's default, 10240.
	TrailingLogs uint64
	// SnapshotInterval is how often the snapshot threshold is checked. Zero means 30 s.
	SnapshotInterval time.Duration
}

// Node is an open raft node. Raft is safe for concurrent use; Shutdown releases every resource.
type Node struct {
	Raft *raft.Raft

	id        raft.ServerID
	transport *raft.NetworkTransport
	boltStore *raftboltdb.BoltStore // nil when in memory
	config    *raft.Config
	logs      raft.LogStore
	stable    raft.StableStore
	snapshots raft.SnapshotStore

	shutdownOnce sync.Once
	shutdownErr  error
}

// Timeouts suited to PDS's small clusters on a LAN or loopback: a failed leader is replaced within about
// a second, while a loaded two-core machine (tests run with -race) does not cause spurious elections.
const (
	heartbeatTimeout   = 500 * time.Millisecond
	electionTimeout    = 500 * time.Millisecond
	leaderLeaseTimeout = 250 * time.Millisecond
	commitTimeout      = 20 * time.Millisecond
	transportTimeout   = 10 * time.Second
	transportPool      = 3
	retainedSnapshots  = 2
	logCacheEntries    = 512
)

// Open starts a raft node. It does not bootstrap a cluster: call BootstrapSingle on the first voter, or let
// a leader add the node (non-voters).
func Open(opts Options) (*Node, error) {
	if opts.NodeID == "" {
		return nil, errors.New("open raft node: NodeID is required")
	}
	if opts.BindAddr == "" {
		return nil, errors.New("open raft node: BindAddr is required")
	}
	if opts.FSM == nil {
		return nil, errors.New("open raft node: FSM is required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	level := opts.LogLevel
	if level == hclog.NoLevel {
		level = hclog.Warn
	}
	hlog := newHCLogger(logger.With("component", "raft"), level)

	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(opts.NodeID)
	cfg.Logger = hlog
	cfg.HeartbeatTimeout = heartbeatTimeout
	cfg.ElectionTimeout = electionTimeout
	cfg.LeaderLeaseTimeout = leaderLeaseTimeout
	cfg.CommitTimeout = commitTimeout
	cfg.SnapshotInterval = 30 * time.Second
	if opts.SnapshotInterval > 0 {
		cfg.SnapshotInterval = opts.SnapshotInterval
	}
	if opts.SnapshotThreshold > 0 {
		cfg.SnapshotThreshold = opts.SnapshotThreshold
	}
	if opts.TrailingLogs > 0 {
		cfg.TrailingLogs = opts.TrailingLogs
	}
	if err := raft.ValidateConfig(cfg); err != nil {
		return nil, fmt.Errorf("open raft node %s: %w", opts.NodeID, err)
	}

	n := &Node{id: cfg.LocalID, config: cfg}
	if err := n.openStores(opts.Dir, hlog); err != nil {
		return nil, fmt.Errorf("open raft node %s: %w", opts.NodeID, err)
	}

	var advertise net.Addr
	if opts.AdvertiseAddr != "" {
		addr, err := net.ResolveTCPAddr("tcp", opts.AdvertiseAddr)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("open raft node %s: resolve advertise address %q: %w", opts.NodeID, opts.AdvertiseAddr, err)
		}
		advertise = addr
	}
	transport, err := raft.NewTCPTransportWithLogger(opts.BindAddr, advertise, transportPool, transportTimeout, hlog.Named("transport"))
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("open raft node %s: listen on %q: %w", opts.NodeID, opts.BindAddr, err)
	}
	n.transport = transport

	r, err := raft.NewRaft(cfg, opts.FSM, n.logs, n.stable, n.snapshots, transport)
	if err != nil {
		_ = transport.Close()
		n.closeStores()
		return nil, fmt.Errorf("open raft node %s: %w", opts.NodeID, err)
	}
	n.Raft = r
	return n, nil
}

func (n *Node) openStores(dir string, hlog hclog.Logger) error {
	if dir == "" {
		mem := raft.NewInmemStore()
		n.logs, n.stable, n.snapshots = mem, mem, raft.NewInmemSnapshotStore()
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create raft dir %q: %w", dir, err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return fmt.Errorf("open raft log %q: %w", filepath.Join(dir, "raft.db"), err)
	}
	snapshots, err := raft.NewFileSnapshotStoreWithLogger(dir, retainedSnapshots, hlog.Named("snapshots"))
	if err != nil {
		_ = bolt.Close()
		return fmt.Errorf("open raft snapshots in %q: %w", dir, err)
	}
	logs, err := raft.NewLogCache(logCacheEntries, bolt)
	if err != nil {
		_ = bolt.Close()
		return fmt.Errorf("open raft log cache: %w", err)
	}
	n.boltStore, n.logs, n.stable, n.snapshots = bolt, logs, bolt, snapshots
	return nil
}

func (n *Node) closeStores() {
	if n.boltStore != nil {
		_ = n.boltStore.Close()
	}
}

// ID returns the node's raft server id.
func (n *Node) ID() raft.ServerID { return n.id }

// Addr returns the address other nodes reach this node's transport at.
func (n *Node) Addr() raft.ServerAddress { return n.transport.LocalAddr() }

// HasExistingState reports whether the node's stores hold raft state from an earlier run.
func (n *Node) HasExistingState() (bool, error) {
	ok, err := raft.HasExistingState(n.logs, n.stable, n.snapshots)
	if err != nil {
		return false, fmt.Errorf("check raft state of %s: %w", n.id, err)
	}
	return ok, nil
}

// BootstrapSingle makes this node the only voter of a new cluster. It does nothing when the node already
// has raft state (a restart, or a node that was added to a cluster), so it is safe to call on every start.
func (n *Node) BootstrapSingle() error {
	existing, err := n.HasExistingState()
	if err != nil {
		return err
	}
	if existing {
		return nil
	}
	cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: n.id, Address: n.Addr()}}}
	if err := n.Raft.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap raft cluster on %s: %w", n.id, err)
	}
	return nil
}

// Shutdown stops raft, closes the transport and the stores. It waits for in-flight FSM applies. Calls
// after the first return the first call's result.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown() })
	return n.shutdownErr
}

func (n *Node) shutdown() error {
	var errs []error
	if err := n.Raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("shut down raft: %w", err))
	}
	if err := n.transport.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft transport: %w", err))
	}
	if n.boltStore != nil {
		if err := n.boltStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shut down raft node %s: %w", n.id, err)
	}
	return nil
}
