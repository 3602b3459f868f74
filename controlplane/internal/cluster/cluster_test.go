package cluster_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/raftnode"
	"github.com/pds-platform/pds/controlplane/internal/cluster"
	"github.com/pds-platform/pds/controlplane/internal/store"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const waitLimit = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openNode(t *testing.T, id, dir string, fsm *configfsm.FSM) *raftnode.Node {
	t.Helper()
	n, err := raftnode.Open(raftnode.Options{NodeID: id, BindAddr: "127.0.0.1:0", Dir: dir, FSM: fsm, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open raft node %s: %v", id, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	return n
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

// openStore returns a command store on a fresh, migrated database.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	databaseURL := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := store.Open(ctx, databaseURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// serve starts ClusterService for node over HTTP, keeping topic reports in st, and returns a JSON client
// for it.
func serve(t *testing.T, node *raftnode.Node, fsm *configfsm.FSM, st *store.Store) pdsv1connect.ClusterServiceClient {
	t.Helper()
	svc, err := cluster.NewService(cluster.Deps{Node: node, Config: fsm.Current, TopicStatus: st, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("new cluster service: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewClusterServiceHandler(svc, connect.WithCodec(jsoncodec.Codec())))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return pdsv1connect.NewClusterServiceClient(srv.Client(), srv.URL, connect.WithCodec(jsoncodec.Codec()), connect.WithProtoJSON())
}

// startLeader bootstraps a durable voter holding one topic and serves ClusterService for it.
func startLeader(t *testing.T) (*raftnode.Node, *configfsm.FSM, pdsv1connect.ClusterServiceClient) {
	t.Helper()
	return startLeaderWithStore(t, openStore(t))
}

// startLeaderWithStore is startLeader keeping topic reports in st.
func startLeaderWithStore(t *testing.T, st *store.Store) (*raftnode.Node, *configfsm.FSM, pdsv1connect.ClusterServiceClient) {
	t.Helper()
	fsm := configfsm.New(nil)
	leader := openNode(t, "cp-1", t.TempDir(), fsm)
	if err := leader.BootstrapSingle(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	waitFor(t, "leadership", func() bool { return leader.Raft.State() == raft.Leader })
	cmd, err := configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{
		OutboxId: 1, Topic: &pdsv1.Topic{TenantId: "t1", TopicName: "portfolio/state/updated", Partitions: 1},
	})
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if err := leader.Raft.Apply(cmd, 5*time.Second).Error(); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return leader, fsm, serve(t, leader, fsm, st)
}

func members(t *testing.T, n *raftnode.Node) map[raft.ServerID]raft.Server {
	t.Helper()
	f := n.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatalf("read configuration: %v", err)
	}
	out := map[raft.ServerID]raft.Server{}
	for _, s := range f.Configuration().Servers {
		out[s.ID] = s
	}
	return out
}

func join(t *testing.T, client pdsv1connect.ClusterServiceClient, id string, addr raft.ServerAddress) uint64 {
	t.Helper()
	resp, err := client.JoinNode(context.Background(), connect.NewRequest(&pdsv1.JoinNodeRequest{NodeId: id, RaftAddress: string(addr)}))
	if err != nil {
		t.Fatalf("JoinNode(%s, %s): %v", id, addr, err)
	}
	return resp.Msg.GetConfigVersion()
}

func TestJoinedNodeReachesTheReturnedConfigVersion(t *testing.T) {
	t.Parallel()
	_, _, client := startLeader(t)
	followerFSM := configfsm.New(nil)
	follower := openNode(t, "dp-1", "", followerFSM)

	version := join(t, client, "dp-1", follower.Addr())
	if version == 0 {
		t.Fatalf("JoinNode returned config_version 0 although the config holds a topic")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cfg, err := followerFSM.WaitForVersion(ctx, version)
	if err != nil {
		t.Fatalf("joined node never reached config version %d: %v", version, err)
	}
	if _, ok := cfg.Topic("t1", "portfolio/state/updated"); !ok {
		t.Fatalf("joined node's config at version %d lacks the leader's topic", cfg.Version)
	}
}

func TestRejoinUnderSameIDReplacesTheMember(t *testing.T) {
	t.Parallel()
	leader, _, client := startLeader(t)
	first := openNode(t, "dp-1", "", configfsm.New(nil))
	join(t, client, "dp-1", first.Addr())
	join(t, client, "dp-1", first.Addr()) // a retried join is harmless
	if err := first.Shutdown(); err != nil {
		t.Fatalf("stop first incarnation: %v", err)
	}

	secondFSM := configfsm.New(nil)
	second := openNode(t, "dp-1", "", secondFSM) // new process, new port, empty memory
	version := join(t, client, "dp-1", second.Addr())
	got := members(t, leader)
	if len(got) != 2 || got["dp-1"].Address != second.Addr() || got["dp-1"].Suffrage != raft.Nonvoter {
		t.Fatalf("members after rejoin = %v, want cp-1 and non-voter dp-1 at %s", got, second.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := secondFSM.WaitForVersion(ctx, version); err != nil {
		t.Fatalf("rejoined node never caught up to version %d: %v", version, err)
	}
}

func TestLeaveNodeRemovesTheMemberAndIsIdempotent(t *testing.T) {
	t.Parallel()
	leader, _, client := startLeader(t)
	follower := openNode(t, "dp-1", "", configfsm.New(nil))
	join(t, client, "dp-1", follower.Addr())
	for attempt := range 2 {
		if _, err := client.LeaveNode(context.Background(), connect.NewRequest(&pdsv1.LeaveNodeRequest{NodeId: "dp-1"})); err != nil {
			t.Fatalf("LeaveNode attempt %d: %v", attempt+1, err)
		}
	}
	if _, ok := members(t, leader)["dp-1"]; ok {
		t.Fatalf("dp-1 is still a member after LeaveNode")
	}
}

func TestMembershipChangesNamingAVoterAreRefused(t *testing.T) {
	t.Parallel()
	leader, _, client := startLeader(t)
	_, err := client.JoinNode(context.Background(), connect.NewRequest(&pdsv1.JoinNodeRequest{NodeId: "cp-1", RaftAddress: "127.0.0.1:9"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("JoinNode with the voter's id: code %v (%v), want FailedPrecondition", connect.CodeOf(err), err)
	}
	_, err = client.JoinNode(context.Background(), connect.NewRequest(&pdsv1.JoinNodeRequest{NodeId: "dp-9", RaftAddress: string(leader.Addr())}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("JoinNode with the voter's address: code %v (%v), want FailedPrecondition", connect.CodeOf(err), err)
	}
	_, err = client.LeaveNode(context.Background(), connect.NewRequest(&pdsv1.LeaveNodeRequest{NodeId: "cp-1"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("LeaveNode with the voter's id: code %v (%v), want FailedPrecondition", connect.CodeOf(err), err)
	}
	if _, ok := members(t, leader)["cp-1"]; !ok {
		t.Fatalf("the voter was removed")
	}
}

func TestNonLeaderAnswersUnavailable(t *testing.T) {
	t.Parallel()
	fsm := configfsm.New(nil)
	lonely := openNode(t, "cp-2", t.TempDir(), fsm) // never bootstrapped: no leader anywhere
	client := serve(t, lonely, fsm, openStore(t))
	_, err := client.JoinNode(context.Background(), connect.NewRequest(&pdsv1.JoinNodeRequest{NodeId: "dp-1", RaftAddress: "127.0.0.1:7001"}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "leader") {
		t.Fatalf("JoinNode on a non-leader: %v (code %v), want Unavailable mentioning the leader", err, connect.CodeOf(err))
	}
}

func TestJoinNodeValidatesInput(t *testing.T) {
	t.Parallel()
	_, _, client := startLeader(t)
	cases := []struct {
		name, nodeID, address, field string
	}{
		{"missing node_id", "", "127.0.0.1:7001", "node_id"},
		{"node_id over 100 characters", strings.Repeat("n", 101), "127.0.0.1:7001", "node_id"},
		{"node_id with a space", "dp 1", "127.0.0.1:7001", "node_id"},
		{"missing raft_address", "dp-1", "", "raft_address"},
		{"raft_address without port", "dp-1", "127.0.0.1", "raft_address"},
		{"raft_address with port 0", "dp-1", "127.0.0.1:0", "raft_address"},
		{"raft_address with port over 65535", "dp-1", "127.0.0.1:65536", "raft_address"},
		{"raft_address unspecified host", "dp-1", "0.0.0.0:7001", "raft_address"},
		{"raft_address without host", "dp-1", ":7001", "raft_address"},
		{"raft_address over 255 characters", "dp-1", strings.Repeat("h", 251) + ":7001", "raft_address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := client.JoinNode(context.Background(), connect.NewRequest(&pdsv1.JoinNodeRequest{NodeId: tc.nodeID, RaftAddress: tc.address}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("code %v (%v), want InvalidArgument", connect.CodeOf(err), err)
			}
			violations := apierr.Violations(err)
			if len(violations) != 1 || violations[0].GetField() != tc.field {
				t.Fatalf("field violations %v, want exactly one naming %q", violations, tc.field)
			}
		})
	}
	t.Run("node_id of exactly 100 characters is accepted", func(t *testing.T) {
		t.Parallel()
		follower := openNode(t, strings.Repeat("n", 100), "", configfsm.New(nil))
		join(t, client, strings.Repeat("n", 100), follower.Addr())
	})
	t.Run("LeaveNode without node_id", func(t *testing.T) {
		t.Parallel()
		_, err := client.LeaveNode(context.Background(), connect.NewRequest(&pdsv1.LeaveNodeRequest{}))
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument || !strings.Contains(cerr.Message(), "node_id") {
			t.Fatalf("LeaveNode without node_id: %v, want InvalidArgument naming node_id", err)
		}
	})
}
