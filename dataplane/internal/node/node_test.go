package node_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/freeport"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/raftnode"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/node"
)

const testTimeout = 30 * time.Second

// voter is a one-voter raft cluster behind a ClusterService, the part of the control plane a data-plane
// node talks to at start and shutdown.
type voter struct {
	pdsv1connect.UnimplementedClusterServiceHandler
	raft *raftnode.Node
	fsm  *configfsm.FSM
}

func (v *voter) JoinNode(_ context.Context, req *connect.Request[pdsv1.JoinNodeRequest]) (*connect.Response[pdsv1.JoinNodeResponse], error) {
	if err := v.raft.AddNonvoter(raft.ServerID(req.Msg.GetNodeId()), raft.ServerAddress(req.Msg.GetRaftAddress()), 10*time.Second); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&pdsv1.JoinNodeResponse{ConfigVersion: v.fsm.Current().Version}), nil
}

func (v *voter) LeaveNode(_ context.Context, req *connect.Request[pdsv1.LeaveNodeRequest]) (*connect.Response[pdsv1.LeaveNodeResponse], error) {
	if err := v.raft.RemoveNonvoter(raft.ServerID(req.Msg.GetNodeId()), 10*time.Second); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&pdsv1.LeaveNodeResponse{}), nil
}

func (v *voter) members(t *testing.T) []raft.ServerID {
	t.Helper()
	f := v.raft.Raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatalf("read raft configuration: %v", err)
	}
	var ids []raft.ServerID
	for _, s := range f.Configuration().Servers {
		ids = append(ids, s.ID)
	}
	return ids
}

func startVoter(t *testing.T) (*voter, string) {
	t.Helper()
	v := &voter{fsm: configfsm.New(nil)}
	n, err := raftnode.Open(raftnode.Options{NodeID: "cp-1", BindAddr: "127.0.0.1:0", FSM: v.fsm, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open voter: %v", err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	if err := n.BootstrapSingle(); err != nil {
		t.Fatalf("bootstrap voter: %v", err)
	}
	v.raft = n
	waitFor(t, "the voter leads", func() bool { return n.Raft.State() == raft.Leader })
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewClusterServiceHandler(v))
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	return v, server.URL
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a condition with a deadline
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return addr
}

func TestNodeJoinsServesGRPCOverH2CAndLeavesOnShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a whole data-plane node; skipped with -short")
	}
	v, controlPlaneURL := startVoter(t)
	httpAddr := freeAddr(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() {
		ran <- node.Run(ctx, node.Config{
			HTTPAddr: httpAddr, RaftAddr: "127.0.0.1:0", NodeID: "dp-test", ControlPlaneURL: controlPlaneURL,
			Broker: "embedded", DataDir: t.TempDir(),
		}, slog.New(slog.DiscardHandler))
	}()
	baseURL := "http://" + httpAddr
	waitFor(t, "/readyz answers 200", func() bool {
		resp, err := http.Get(baseURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if ids := v.members(t); len(ids) != 2 {
		t.Fatalf("raft members %v, want the voter and dp-test", ids)
	}

	data, err := configfsm.EncodeCommand(configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{Topic: &pdsv1.Topic{
		Id: uuid.NewString(), TenantId: tenancy.DefaultTenantID, TopicName: "portfolio/state/updated",
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 2, Enabled: true,
	}})
	if err != nil {
		t.Fatalf("encode topic: %v", err)
	}
	if err := v.raft.Raft.Apply(data, 10*time.Second).Error(); err != nil {
		t.Fatalf("apply topic: %v", err)
	}

	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	client := pdsv1connect.NewPortfolioStreamClient(&http.Client{Transport: h2c}, baseURL, connect.WithGRPC())
	event := &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data:     &pdsv1.PortfolioData{PortfolioId: "portfolio_001", TotalValue: 1},
	}
	var published *pdsv1.PublishResponse
	waitFor(t, "a gRPC Publish succeeds once the topic reached the node", func() bool {
		resp, err := client.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{event}}))
		if err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("gRPC publish: %v", err)
			}
			return false // the topic has not been replicated yet
		}
		published = resp.Msg
		return true
	})
	if got := published.GetEvents()[0]; got.GetTopic() != "portfolio/state/updated" || got.GetEventId() == "" {
		t.Fatalf("published %v, want an event id on portfolio/state/updated", got)
	}

	stop()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("node stopped with an error: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("node did not shut down")
	}
	if ids := v.members(t); len(ids) != 1 {
		t.Fatalf("raft members after shutdown %v, want only the voter (the node leaves)", ids)
	}
	if resp, err := http.Get(baseURL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("node still answers HTTP after shutdown")
	}
}
