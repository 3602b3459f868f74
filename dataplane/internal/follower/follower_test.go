package follower_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/raftnode"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/follower"
)

const testTimeout = 30 * time.Second

// controlPlane is a one-voter raft cluster with a ClusterService in front of it, as the control plane runs
// it; reachable is false while it should look down (JoinNode answers Unavailable).
type controlPlane struct {
	node      *raftnode.Node
	fsm       *configfsm.FSM
	url       string
	reachable atomic.Bool
	left      atomic.Value // node id of the last LeaveNode
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	cp := &controlPlane{fsm: configfsm.New(nil)}
	node, err := raftnode.Open(raftnode.Options{NodeID: "cp-1", BindAddr: "127.0.0.1:0", FSM: cp.fsm, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open control-plane raft node: %v", err)
	}
	t.Cleanup(func() { _ = node.Shutdown() })
	if err := node.BootstrapSingle(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	cp.node = node
	deadline := time.Now().Add(testTimeout)
	for node.Raft.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("control-plane voter did not become leader")
		}
		select {
		case <-node.Raft.LeaderCh():
		case <-time.After(50 * time.Millisecond):
		}
	}
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewClusterServiceHandler(cp))
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	cp.url = server.URL
	return cp
}

func (cp *controlPlane) JoinNode(_ context.Context, req *connect.Request[pdsv1.JoinNodeRequest]) (*connect.Response[pdsv1.JoinNodeResponse], error) {
	if !cp.reachable.Load() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("control plane starting"))
	}
	if err := cp.node.AddNonvoter(raft.ServerID(req.Msg.GetNodeId()), raft.ServerAddress(req.Msg.GetRaftAddress()), 10*time.Second); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&pdsv1.JoinNodeResponse{ConfigVersion: cp.fsm.Current().Version}), nil
}

func (cp *controlPlane) LeaveNode(_ context.Context, req *connect.Request[pdsv1.LeaveNodeRequest]) (*connect.Response[pdsv1.LeaveNodeResponse], error) {
	if err := cp.node.RemoveNonvoter(raft.ServerID(req.Msg.GetNodeId()), 10*time.Second); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	cp.left.Store(req.Msg.GetNodeId())
	return connect.NewResponse(&pdsv1.LeaveNodeResponse{}), nil
}

func (cp *controlPlane) putTopic(t *testing.T, name string) {
	t.Helper()
	data, err := configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{Topic: &pdsv1.Topic{
		Id: uuid.NewString(), TenantId: tenancy.DefaultTenantID, TopicName: name,
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 1, Enabled: true,
	}})
	if err != nil {
		t.Fatalf("encode put topic: %v", err)
	}
	if err := cp.node.Raft.Apply(data, 10*time.Second).Error(); err != nil {
		t.Fatalf("apply put topic %q: %v", name, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

func TestFollowerJoinsALateControlPlaneAndFollowsItsConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts raft nodes; skipped with -short")
	}
	t.Parallel()
	cp := startControlPlane(t)
	cp.putTopic(t, "portfolio/state/updated")

	f, err := follower.Start(follower.Options{
		NodeID:       "dp-test",
		RaftBindAddr: "127.0.0.1:0",
		Cluster:      pdsv1connect.NewClusterServiceClient(http.DefaultClient, cp.url),
		Logger:       slog.New(slog.DiscardHandler),
		JoinRetryMin: 10 * time.Millisecond,
		JoinRetryMax: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("start follower: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = f.Close(context.Background())
		}
	})

	waitFor(t, "the follower reports its failed join", func() bool {
		ready, _, reason := f.Ready()
		return !ready && strings.Contains(reason, "control plane starting")
	})

	cp.reachable.Store(true)
	select {
	case <-f.ReadyC():
	case <-time.After(testTimeout):
		_, version, reason := f.Ready()
		t.Fatalf("follower not ready after the control plane came up: version %d, %s", version, reason)
	}
	if _, ok := f.FSM().Current().Topic(tenancy.DefaultTenantID, "portfolio/state/updated"); !ok {
		t.Fatal("ready follower lacks the topic the control plane had when it joined")
	}

	cp.putTopic(t, "portfolio/cash/updated")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := f.FSM().WaitForVersion(ctx, cp.fsm.Current().Version); err != nil {
		t.Fatalf("follower did not apply a later change: %v", err)
	}
	if _, ok := f.FSM().Current().Topic(tenancy.DefaultTenantID, "portfolio/cash/updated"); !ok {
		t.Fatal("follower lacks the topic created after it joined")
	}

	cp.reachable.Store(false)
	if ready, _, reason := f.Ready(); !ready {
		t.Fatalf("follower stopped being ready while the control plane is away: %s", reason)
	}

	closed = true
	if err := f.Close(ctx); err != nil {
		t.Fatalf("close follower: %v", err)
	}
	if left, _ := cp.left.Load().(string); left != "dp-test" {
		t.Fatalf("follower did not leave the cluster on close (last LeaveNode: %q)", left)
	}
}
