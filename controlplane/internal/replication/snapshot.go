package replication

import (
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
)

// trackingFSM is the config FSM plus a record of the highest outbox id a persisted (or restored) raft
// snapshot covers, which tells the leader which outbox rows no longer matter even for a node that
// rebuilds from the snapshot.
type trackingFSM struct {
	*configfsm.FSM
	covered *atomic.Uint64
}

var _ raft.FSM = trackingFSM{}

// Snapshot runs on the FSM goroutine, so the outbox id read here is exactly the one the snapshot holds.
func (f trackingFSM) Snapshot() (raft.FSMSnapshot, error) {
	inner, err := f.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return &trackedSnapshot{inner: inner, outboxID: f.FSM.Current().LastOutboxID, covered: f.covered}, nil
}

func (f trackingFSM) Restore(rc io.ReadCloser) error {
	if err := f.FSM.Restore(rc); err != nil {
		return err
	}
	storeMax(f.covered, f.FSM.Current().LastOutboxID)
	return nil
}

type trackedSnapshot struct {
	inner    raft.FSMSnapshot
	outboxID uint64
	covered  *atomic.Uint64
}

func (s *trackedSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.inner.Persist(sink); err != nil {
		return err
	}
	storeMax(s.covered, s.outboxID)
	return nil
}

func (s *trackedSnapshot) Release() { s.inner.Release() }

func storeMax(v *atomic.Uint64, n uint64) {
	for {
		cur := v.Load()
		if n <= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}
