package raftnode_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/raftnode"
	"google.golang.org/protobuf/proto"
)

const waitLimit = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openNode(t *testing.T, id, dir string, fsm raft.FSM, opts raftnode.Options) *raftnode.Node {
	t.Helper()
	opts.NodeID, opts.BindAddr, opts.Dir, opts.FSM, opts.Logger = id, "127.0.0.1:0", dir, fsm, quietLogger()
	n, err := raftnode.Open(opts)
	if err != nil {
		t.Fatalf("open raft node %s: %v", id, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	return n
}

// startLeader opens a durable single voter and waits until it leads.
func startLeader(t *testing.T, opts raftnode.Options) (*raftnode.Node, *configfsm.FSM) {
	t.Helper()
	fsm := configfsm.New(nil)
	leader := openNode(t, "cp-1", t.TempDir(), fsm, opts)
	if err := leader.BootstrapSingle(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	waitFor(t, "cp-1 to become leader", func() bool { return leader.Raft.State() == raft.Leader })
	return leader, fsm
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func putTopics(t *testing.T, leader *raftnode.Node, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		cmd, err := configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{
			OutboxId: uint64(i),
			Topic:    &pdsv1.Topic{TenantId: "t1", TopicName: fmt.Sprintf("portfolio/topic-%03d", i), Partitions: 4},
		})
		if err != nil {
			t.Fatalf("encode command %d: %v", i, err)
		}
		f := leader.Raft.Apply(cmd, 5*time.Second)
		if err := f.Error(); err != nil {
			t.Fatalf("apply command %d: %v", i, err)
		}
		if resp, _ := f.Response().(error); resp != nil {
			t.Fatalf("fsm rejected command %d: %v", i, resp)
		}
	}
}

// sameConfig fails unless both configs hold the same topics and outbox position.
func sameConfig(t *testing.T, want, got *configfsm.Config) {
	t.Helper()
	if got.LastOutboxID != want.LastOutboxID {
		t.Fatalf("follower LastOutboxID = %d, leader has %d", got.LastOutboxID, want.LastOutboxID)
	}
	wt, gt := want.Topics(), got.Topics()
	if len(wt) != len(gt) {
		t.Fatalf("follower has %d topics, leader has %d", len(gt), len(wt))
	}
	for i := range wt {
		if !proto.Equal(wt[i], gt[i]) {
			t.Fatalf("topic %d differs: leader %v, follower %v", i, wt[i], gt[i])
		}
	}
}

func snapshotIndex(n *raftnode.Node) uint64 {
	v, _ := strconv.ParseUint(n.Raft.Stats()["last_snapshot_index"], 10, 64)
	return v
}

func TestNonvoterReceivesSnapshotAndLog(t *testing.T) {
	t.Parallel()
	leader, leaderFSM := startLeader(t, raftnode.Options{SnapshotThreshold: 5, TrailingLogs: 1})
	putTopics(t, leader, 1, 20)
	if err := leader.Raft.Snapshot().Error(); err != nil {
		t.Fatalf("force snapshot on leader: %v", err)
	}
	putTopics(t, leader, 21, 25) // after the snapshot: must arrive through the log

	followerFSM := configfsm.New(nil)
	follower := openNode(t, "dp-1", "", followerFSM, raftnode.Options{})
	if err := leader.AddNonvoter(follower.ID(), follower.Addr(), 5*time.Second); err != nil {
		t.Fatalf("add non-voter: %v", err)
	}
	want := leaderFSM.Current()
	waitFor(t, "the non-voter to apply the leader's config", func() bool {
		return followerFSM.Current().LastOutboxID >= want.LastOutboxID
	})
	sameConfig(t, want, followerFSM.Current())
	if snapshotIndex(follower) == 0 {
		t.Fatalf("non-voter caught up without installing a snapshot; stats: %v", follower.Raft.Stats())
	}
	if follower.Raft.State() != raft.Follower {
		t.Fatalf("non-voter state = %s, want Follower", follower.Raft.State())
	}

	putTopics(t, leader, 26, 27)
	waitFor(t, "the non-voter to apply entries written after it joined", func() bool {
		return followerFSM.Current().LastOutboxID == 27
	})
	sameConfig(t, leaderFSM.Current(), followerFSM.Current())
}

func TestNonvoterRestartedWithEmptyMemoryCatchesUp(t *testing.T) {
	t.Parallel()
	leader, leaderFSM := startLeader(t, raftnode.Options{})
	putTopics(t, leader, 1, 5)

	firstFSM := configfsm.New(nil)
	first := openNode(t, "dp-1", "", firstFSM, raftnode.Options{})
	if err := leader.AddNonvoter(first.ID(), first.Addr(), 5*time.Second); err != nil {
		t.Fatalf("add non-voter: %v", err)
	}
	waitFor(t, "first incarnation to apply outbox id 5", func() bool {
		return firstFSM.Current().LastOutboxID == 5
	})
	if err := first.Shutdown(); err != nil {
		t.Fatalf("shut down first incarnation: %v", err)
	}
	putTopics(t, leader, 6, 10) // written while the node is away

	secondFSM := configfsm.New(nil)
	second := openNode(t, "dp-1", "", secondFSM, raftnode.Options{})
	if err := leader.AddNonvoter(second.ID(), second.Addr(), 5*time.Second); err != nil {
		t.Fatalf("rejoin under the same id at %s: %v", second.Addr(), err)
	}
	waitFor(t, "restarted non-voter to catch up", func() bool { return secondFSM.Current().LastOutboxID == 10 })
	sameConfig(t, leaderFSM.Current(), secondFSM.Current())

	cfg := leader.Raft.GetConfiguration()
	if err := cfg.Error(); err != nil {
		t.Fatalf("read configuration: %v", err)
	}
	var members []string
	for _, s := range cfg.Configuration().Servers {
		members = append(members, fmt.Sprintf("%s@%s/%s", s.ID, s.Address, s.Suffrage))
	}
	if len(members) != 2 {
		t.Fatalf("configuration after rejoin = %v, want the voter and one dp-1 entry", members)
	}
}

func TestAddNonvoterRefusesVoterID(t *testing.T) {
	t.Parallel()
	leader, _ := startLeader(t, raftnode.Options{})
	err := leader.AddNonvoter("cp-1", "127.0.0.1:1", time.Second)
	if err == nil || !errors.Is(err, raftnode.ErrIsVoter) {
		t.Fatalf("AddNonvoter with the voter's id: err = %v, want ErrIsVoter", err)
	}
}

func TestBootstrapSingleIsIdempotentAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fsm := configfsm.New(nil)
	n, err := raftnode.Open(raftnode.Options{NodeID: "cp-1", BindAddr: "127.0.0.1:0", Dir: dir, FSM: fsm, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := n.BootstrapSingle(); err != nil {
		_ = n.Shutdown()
		t.Fatalf("bootstrap: %v", err)
	}
	waitFor(t, "leadership", func() bool { return n.Raft.State() == raft.Leader })
	putTopics(t, n, 1, 3)
	if err := n.Shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	again := configfsm.New(nil)
	reopened := openNode(t, "cp-1", dir, again, raftnode.Options{})
	if err := reopened.BootstrapSingle(); err != nil {
		t.Fatalf("bootstrap on existing state: %v", err)
	}
	waitFor(t, "leadership after restart", func() bool { return reopened.Raft.State() == raft.Leader })
	if err := reopened.Raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	if got := again.Current().LastOutboxID; got != 3 {
		t.Fatalf("restarted voter LastOutboxID = %d, want 3 (log replayed from disk)", got)
	}
}
