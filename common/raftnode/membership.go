package raftnode

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// ErrIsVoter is returned when a membership change for non-voters names a voter's id.
var ErrIsVoter = errors.New("server is a voter")

// NotLeaderError is returned by membership changes on a node that is not the leader. LeaderAddr is the
// leader's raft address, empty when no leader is known.
type NotLeaderError struct {
	LeaderID   raft.ServerID
	LeaderAddr raft.ServerAddress
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "not the raft leader and no leader is known"
	}
	return fmt.Sprintf("not the raft leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

func (n *Node) notLeader() error {
	addr, id := n.Raft.LeaderWithID()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

func (n *Node) servers() ([]raft.Server, error) {
	f := n.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	return f.Configuration().Servers, nil
}

// AddNonvoter adds a non-voting member that receives the log and snapshots. It must run on the leader
// (NotLeaderError otherwise) and waits up to timeout for the change to commit.
//
// It is idempotent for a node that rejoins under the same id, with the same or a new address: the member
// is removed and added again, which restarts the leader's replication to it at once (raft would otherwise
// keep the exponential back-off it built up while the node was away, up to ~10 s) and lets a node that
// lost its memory catch up from a snapshot. A stale member holding the same address under another id is
// removed first: two live processes cannot share one listening address. An id that names a voter fails
// with ErrIsVoter.
func (n *Node) AddNonvoter(id raft.ServerID, addr raft.ServerAddress, timeout time.Duration) error {
	if n.Raft.State() != raft.Leader {
		return n.notLeader()
	}
	servers, err := n.servers()
	if err != nil {
		return fmt.Errorf("add non-voter %s: %w", id, err)
	}
	for _, s := range servers {
		switch {
		case s.ID == id && s.Suffrage != raft.Nonvoter:
			return fmt.Errorf("add non-voter %s: %w", id, ErrIsVoter)
		case s.ID == id, s.Address == addr && s.Suffrage == raft.Nonvoter:
			if err := n.removeServer(s.ID, timeout); err != nil {
				return fmt.Errorf("add non-voter %s: replace member %s at %s: %w", id, s.ID, s.Address, err)
			}
		case s.Address == addr:
			return fmt.Errorf("add non-voter %s: address %s belongs to voter %s: %w", id, addr, s.ID, ErrIsVoter)
		}
	}
	if err := n.Raft.AddNonvoter(id, addr, 0, timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return n.notLeader()
		}
		return fmt.Errorf("add non-voter %s at %s: %w", id, addr, err)
	}
	return nil
}

// RemoveNonvoter removes a non-voting member. It must run on the leader (NotLeaderError otherwise);
// removing an id that is not a member succeeds, and an id that names a voter fails with ErrIsVoter.
func (n *Node) RemoveNonvoter(id raft.ServerID, timeout time.Duration) error {
	if n.Raft.State() != raft.Leader {
		return n.notLeader()
	}
	servers, err := n.servers()
	if err != nil {
		return fmt.Errorf("remove non-voter %s: %w", id, err)
	}
	for _, s := range servers {
		if s.ID != id {
			continue
		}
		if s.Suffrage != raft.Nonvoter {
			return fmt.Errorf("remove non-voter %s: %w", id, ErrIsVoter)
		}
		if err := n.removeServer(id, timeout); err != nil {
			return fmt.Errorf("remove non-voter %s: %w", id, err)
		}
	}
	return nil
}

func (n *Node) removeServer(id raft.ServerID, timeout time.Duration) error {
	if err := n.Raft.RemoveServer(id, 0, timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return n.notLeader()
		}
		return err
	}
	return nil
}
