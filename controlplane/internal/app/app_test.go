package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/pds-platform/pds/common/configfsm"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/raftnode"
	"github.com/pds-platform/pds/controlplane/internal/app"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const waitLimit = 30 * time.Second

type running struct {
	app  *app.App
	url  string
	stop func() error
}

func start(t *testing.T, databaseURL, dataDir string) *running {
	t.Helper()
	cfg := app.Config{
		HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", NodeID: "cp-1", DataDir: dataDir,
		DatabaseURL: databaseURL, ShutdownTimeout: 10 * time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Start(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("start control plane: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx) }()
	stopped := false
	var stopErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-served
		}
		return stopErr
	}
	t.Cleanup(func() { _ = stop() })
	r := &running{app: a, url: "http://" + a.HTTPAddr(), stop: stop}
	waitReady(t, r.url)
	return r
}

func waitReady(t *testing.T, baseURL string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		resp, err := http.Get(baseURL + "/readyz")
		if err == nil {
			var body struct {
				Ready  bool   `json:"ready"`
				Reason string `json:"reason"`
			}
			decodeErr := json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && decodeErr == nil && body.Ready {
				return
			}
			err = errors.New(body.Reason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane at %s not ready after %s: %v", baseURL, waitLimit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func topicClient(url string) pdsv1connect.TopicServiceClient {
	return pdsv1connect.NewTopicServiceClient(http.DefaultClient, url, connect.WithCodec(jsoncodec.Codec()), connect.WithProtoJSON())
}

func TestAdminWriteReturnsAReplicatedVersionAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	databaseURL, dataDir := pgtest.NewDatabase(t), t.TempDir()
	cp := start(t, databaseURL, dataDir)

	resp, err := topicClient(cp.url).CreateTopic(context.Background(), connect.NewRequest(&pdsv1.CreateTopicRequest{
		Topic: &pdsv1.Topic{TopicName: "portfolio/state/updated", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 4},
	}))
	if err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	version := resp.Msg.GetConfigVersion()
	if version == 0 {
		t.Fatalf("CreateTopic returned config_version 0")
	}

	// A data-plane style non-voter joins through ClusterService and must see the topic at that version.
	fsm := configfsm.New(nil)
	follower, err := raftnode.Open(raftnode.Options{NodeID: "dp-1", BindAddr: "127.0.0.1:0", FSM: fsm, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("open follower: %v", err)
	}
	t.Cleanup(func() { _ = follower.Shutdown() })
	cluster := pdsv1connect.NewClusterServiceClient(http.DefaultClient, cp.url)
	joined, err := cluster.JoinNode(context.Background(), connect.NewRequest(&pdsv1.JoinNodeRequest{NodeId: "dp-1", RaftAddress: string(follower.Addr())}))
	if err != nil {
		t.Fatalf("JoinNode: %v", err)
	}
	if joined.Msg.GetConfigVersion() < version {
		t.Fatalf("JoinNode config_version %d is below the write's %d", joined.Msg.GetConfigVersion(), version)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cfg, err := fsm.WaitForVersion(ctx, version)
	if err != nil {
		t.Fatalf("follower never reached version %d: %v", version, err)
	}
	if topic, ok := cfg.Topic(cfgTenant(t, cfg), "portfolio/state/updated"); !ok || topic.GetPartitions() != 4 {
		t.Fatalf("follower config lacks the created topic (got %v)", topic)
	}
	if follower.Raft.State() != raft.Follower {
		t.Fatalf("joined node is %s, want Follower", follower.Raft.State())
	}

	if err := cp.stop(); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	again := start(t, databaseURL, dataDir)
	got, err := topicClient(again.url).GetTopic(context.Background(), connect.NewRequest(&pdsv1.GetTopicRequest{TopicName: "portfolio/state/updated"}))
	if err != nil {
		t.Fatalf("GetTopic after restart: %v", err)
	}
	if got.Msg.GetTopic().GetPartitions() != 4 {
		t.Fatalf("topic after restart has %d partitions, want 4", got.Msg.GetTopic().GetPartitions())
	}
}

func cfgTenant(t *testing.T, cfg *configfsm.Config) string {
	t.Helper()
	topics := cfg.Topics()
	if len(topics) == 0 {
		t.Fatalf("replicated config holds no topics")
	}
	return topics[0].GetTenantId()
}

func TestHealthAndMetricsEndpoints(t *testing.T) {
	t.Parallel()
	cp := start(t, pgtest.NewDatabase(t), t.TempDir())
	if _, err := topicClient(cp.url).CreateTopic(context.Background(), connect.NewRequest(&pdsv1.CreateTopicRequest{
		Topic: &pdsv1.Topic{TopicName: "portfolio/cash/updated", DataType: pdsv1.PortfolioDataType_CASH_MANAGEMENT},
	})); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	cases := []struct {
		name, path, contains string
	}{
		{"liveness", "/healthz", `"status":"ok"`},
		{"readiness carries the config version", "/readyz", `"config_version":`},
		{"metrics expose the outbox applier", "/metrics", "pds_controlplane_outbox_applied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(cp.url + tc.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tc.path, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), tc.contains) {
				t.Fatalf("GET %s: status %d, body %.300s; want 200 containing %q", tc.path, resp.StatusCode, body, tc.contains)
			}
		})
	}
}

func TestStartFailsOnUnreachableDatabase(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := app.Start(ctx, app.Config{
		HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", NodeID: "cp-1", DataDir: t.TempDir(),
		DatabaseURL: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", ShutdownTimeout: time.Second,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatalf("Start succeeded against an unreachable database")
	}
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	env := map[string]string{"PDS_DATABASE_URL": "postgres://env", "PDS_NODE_ID": "cp-env"}
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(app.Config) bool
		wantErr string
	}{
		{"defaults and env", nil, env, func(c app.Config) bool {
			return c.HTTPAddr == "127.0.0.1:8080" && c.RaftAddr == "127.0.0.1:7000" && c.NodeID == "cp-env" &&
				c.DataDir == "./data/controlplane" && c.DatabaseURL == "postgres://env" && c.ShutdownTimeout == 15*time.Second
		}, ""},
		{"flag beats env", []string{"--node-id", "cp-flag", "--http-addr", ":9090"}, env, func(c app.Config) bool {
			return c.NodeID == "cp-flag" && c.HTTPAddr == ":9090"
		}, ""},
		{"database url required", nil, nil, nil, "--database-url"},
		{"bad shutdown timeout", []string{"--shutdown-timeout", "soon"}, env, nil, "--shutdown-timeout"},
		{"stray argument", []string{"extra"}, env, nil, "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := app.ParseConfig(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.want(cfg) {
				t.Fatalf("config %+v, err %v", cfg, err)
			}
		})
	}
	if _, err := app.ParseConfig([]string{"-h"}, func(string) string { return "" }, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: err %v, want flag.ErrHelp", err)
	}
}
