package follower_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/follower"
)

// ReportTopicStatus completes follower_test.go's control plane as a ClusterServiceHandler; the follower
// tests do not send reports.
func (cp *controlPlane) ReportTopicStatus(context.Context, *connect.Request[pdsv1.ReportTopicStatusRequest]) (*connect.Response[pdsv1.ReportTopicStatusResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not used by the follower tests"))
}

// statusRecorder is the control plane's ClusterService as far as topic reports go: it keeps every request,
// and answers Unavailable while down is set.
type statusRecorder struct {
	pdsv1connect.UnimplementedClusterServiceHandler
	down atomic.Bool

	mu       sync.Mutex
	requests []*pdsv1.ReportTopicStatusRequest
}

func (r *statusRecorder) ReportTopicStatus(_ context.Context, req *connect.Request[pdsv1.ReportTopicStatusRequest]) (*connect.Response[pdsv1.ReportTopicStatusResponse], error) {
	if r.down.Load() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("control plane down"))
	}
	r.mu.Lock()
	r.requests = append(r.requests, proto.CloneOf(req.Msg))
	r.mu.Unlock()
	return connect.NewResponse(&pdsv1.ReportTopicStatusResponse{}), nil
}

// reportsOf returns every report received for the topic id, oldest first.
func (r *statusRecorder) reportsOf(topicID string) []*pdsv1.TopicStatusReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pdsv1.TopicStatusReport
	for _, req := range r.requests {
		for _, t := range req.GetTopics() {
			if t.GetTopicId() == topicID {
				out = append(out, t)
			}
		}
	}
	return out
}

// latest is the newest report for the topic id, nil when none arrived.
func (r *statusRecorder) latest(topicID string) *pdsv1.TopicStatusReport {
	reports := r.reportsOf(topicID)
	if len(reports) == 0 {
		return nil
	}
	return reports[len(reports)-1]
}

// serveRecorder serves rec and returns a reporter for node dp-1 talking to it over HTTP.
func serveRecorder(t *testing.T, rec *statusRecorder) *follower.ClusterReporter {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewClusterServiceHandler(rec))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	reporter, err := follower.NewClusterReporter(pdsv1connect.NewClusterServiceClient(srv.Client(), srv.URL), "dp-1")
	if err != nil {
		t.Fatalf("new cluster reporter: %v", err)
	}
	return reporter
}

// configLog applies commands to a real config FSM the way raft does.
type configLog struct {
	fsm   *configfsm.FSM
	index uint64
}

func (l *configLog) apply(t *testing.T, kind configv1.CommandType, msg proto.Message) {
	t.Helper()
	data, err := configfsm.EncodeCommand(kind, msg)
	if err != nil {
		t.Fatalf("encode %s: %v", kind, err)
	}
	l.index++
	if res := l.fsm.Apply(&raft.Log{Index: l.index, Type: raft.LogCommand, Data: data}); res != nil {
		t.Fatalf("apply %s: %v", kind, res)
	}
}

func (l *configLog) putTopic(t *testing.T, topic *pdsv1.Topic) {
	t.Helper()
	l.apply(t, configv1.CommandType_COMMAND_TYPE_PUT_TOPIC, &configv1.PutTopic{OutboxId: l.index + 1, Topic: topic})
}

func newTopic(name string, partitions int32) *pdsv1.Topic {
	return &pdsv1.Topic{Id: uuid.NewString(), TenantId: tenancy.DefaultTenantID, TopicName: name,
		DataType: pdsv1.PortfolioDataType_CASH_MANAGEMENT, Partitions: partitions, Enabled: true}
}

func openEmbedded(t *testing.T, dir string) *broker.EmbeddedBroker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b, err := broker.OpenEmbedded(ctx, broker.EmbeddedOptions{Dir: dir})
	if err != nil {
		t.Fatalf("open embedded broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// fastRetries keep the tests' backoff short.
var fastRetries = follower.BrokerSyncOptions{RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, AttemptTimeout: 5 * time.Second}

// runSync runs a BrokerSync until the test ends.
func runSync(t *testing.T, fsm *configfsm.FSM, b broker.Broker, reporter follower.TopicStatusReporter) {
	t.Helper()
	s, err := follower.NewBrokerSync(follower.BrokerSyncDeps{FSM: fsm, Broker: b, Reporter: reporter, Logger: slog.New(slog.DiscardHandler)}, fastRetries)
	if err != nil {
		t.Fatalf("new broker sync: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() { stop(); <-done })
}

// publishes tells whether a publish to the topic succeeds, i.e. the topic exists at the broker.
func publishes(b broker.Broker, topic *pdsv1.Topic, partition int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ref := broker.TopicRef{TenantID: topic.GetTenantId(), ID: topic.GetId(), Name: topic.GetTopicName(), Partitions: int(topic.GetPartitions())}
	return b.Publish(ctx, ref, []broker.Record{{Partition: partition, Key: "p.cash.update", EventID: uuid.NewString(), Value: []byte("x")}}) == nil
}

func isReady(r *pdsv1.TopicStatusReport, partitions int32) bool {
	return r.GetState() == pdsv1.BrokerState_BROKER_STATE_READY && r.GetPartitions() == partitions
}

func TestBrokerSyncCarriesOutTopicsAndReportsThemReady(t *testing.T) {
	if testing.Short() {
		t.Skip("uses the embedded broker; skipped with -short")
	}
	t.Parallel()
	b := openEmbedded(t, t.TempDir())
	rec := &statusRecorder{}
	cfg := &configLog{fsm: configfsm.New(filter.Compiler)}
	runSync(t, cfg.fsm, b, serveRecorder(t, rec))

	topic := newTopic("portfolio/cash/updated", 2)
	cfg.putTopic(t, topic)
	waitFor(t, "a READY report with 2 partitions", func() bool { return isReady(rec.latest(topic.GetId()), 2) })
	if !publishes(b, topic, 1) {
		t.Fatalf("publishing to partition 1 fails although the topic was reported READY with 2 partitions")
	}
	if got := rec.latest(topic.GetId()); got.GetTenantId() != topic.GetTenantId() || got.GetTopicName() != topic.GetTopicName() {
		t.Fatalf("report %v does not name the topic's tenant and name", got)
	}

	grown := proto.CloneOf(topic)
	grown.Partitions = 6
	cfg.putTopic(t, grown)
	waitFor(t, "a READY report with the grown 6 partitions", func() bool { return isReady(rec.latest(topic.GetId()), 6) })

	cfg.apply(t, configv1.CommandType_COMMAND_TYPE_DELETE_TOPIC, &configv1.DeleteTopic{TenantId: topic.GetTenantId(), TopicName: topic.GetTopicName()})
	waitFor(t, "the topic removed from the config to be deleted at the broker", func() bool { return !publishes(b, grown, 1) })
}

func TestBrokerSyncReportsABrokerFailureAndRetriesUntilItGoesAway(t *testing.T) {
	if testing.Short() {
		t.Skip("uses the embedded broker; skipped with -short")
	}
	t.Parallel()
	dir := t.TempDir()
	b := openEmbedded(t, dir)
	topic := newTopic("portfolio/cash/updated", 3)
	// A file where JetStream keeps the topic's stream directory makes the engine refuse to create the
	// topic, until the file is removed: a real storage failure that goes away.
	blocker := filepath.Join(dir, "jetstream", "$G", "streams", "PDS_"+topic.GetTenantId()+"_"+topic.GetId())
	if err := os.MkdirAll(filepath.Dir(blocker), 0o755); err != nil {
		t.Fatalf("create streams folder: %v", err)
	}
	if err := os.WriteFile(blocker, []byte("in the way"), 0o644); err != nil {
		t.Fatalf("create blocking file: %v", err)
	}

	rec := &statusRecorder{}
	cfg := &configLog{fsm: configfsm.New(filter.Compiler)}
	runSync(t, cfg.fsm, b, serveRecorder(t, rec))
	cfg.putTopic(t, topic)

	failedTwice := func() bool {
		failed := 0
		for _, r := range rec.reportsOf(topic.GetId()) {
			if r.GetState() == pdsv1.BrokerState_BROKER_STATE_FAILED {
				failed++
			}
		}
		return failed >= 2
	}
	waitFor(t, "two FAILED reports (the first attempt and a retry)", failedTwice)
	failure := rec.latest(topic.GetId())
	if failure.GetState() != pdsv1.BrokerState_BROKER_STATE_FAILED || !strings.Contains(failure.GetMessage(), "ensure topic") ||
		!strings.Contains(failure.GetMessage(), "times; next attempt in") {
		t.Fatalf("failure report = %v, want FAILED with the broker's error and the number of attempts", failure)
	}
	t.Logf("reported while the engine refused the topic: %s", failure.GetMessage())

	if err := os.Remove(blocker); err != nil {
		t.Fatalf("remove blocking file: %v", err)
	}
	waitFor(t, "READY with 3 partitions once the broker can create the topic", func() bool { return isReady(rec.latest(topic.GetId()), 3) })
	if !publishes(b, topic, 2) {
		t.Fatalf("publishing fails although the topic was reported READY after the failure went away")
	}
}

func TestBrokerSyncReportsFailedOnAClosedBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("uses the embedded broker; skipped with -short")
	}
	t.Parallel()
	b := openEmbedded(t, t.TempDir())
	if err := b.Close(); err != nil {
		t.Fatalf("close broker: %v", err)
	}
	rec := &statusRecorder{}
	cfg := &configLog{fsm: configfsm.New(filter.Compiler)}
	runSync(t, cfg.fsm, b, serveRecorder(t, rec))
	topic := newTopic("portfolio/cash/updated", 1)
	cfg.putTopic(t, topic)
	waitFor(t, "a FAILED report naming the closed broker", func() bool {
		r := rec.latest(topic.GetId())
		return r.GetState() == pdsv1.BrokerState_BROKER_STATE_FAILED && strings.Contains(r.GetMessage(), broker.ErrClosed.Error())
	})
}

func TestBrokerSyncKeepsWorkingAndReportsLaterWhileTheControlPlaneIsAway(t *testing.T) {
	if testing.Short() {
		t.Skip("uses the embedded broker; skipped with -short")
	}
	t.Parallel()
	b := openEmbedded(t, t.TempDir())
	rec := &statusRecorder{}
	rec.down.Store(true)
	cfg := &configLog{fsm: configfsm.New(filter.Compiler)}
	runSync(t, cfg.fsm, b, serveRecorder(t, rec))
	topics := []*pdsv1.Topic{newTopic("portfolio/cash/updated", 2), newTopic("portfolio/state/updated", 4)}
	for _, topic := range topics {
		cfg.putTopic(t, topic)
	}
	for _, topic := range topics {
		waitFor(t, "topic "+topic.GetTopicName()+" to exist at the broker while the control plane is down",
			func() bool { return publishes(b, topic, 0) })
	}
	rec.down.Store(false)
	for _, topic := range topics {
		waitFor(t, "the READY report of "+topic.GetTopicName()+" once the control plane is back",
			func() bool { return isReady(rec.latest(topic.GetId()), topic.GetPartitions()) })
	}
}

func TestClusterReporterSplitsLargeReportsAndShortensLongMessages(t *testing.T) {
	t.Parallel()
	rec := &statusRecorder{}
	reporter := serveRecorder(t, rec)
	reports := make([]*pdsv1.TopicStatusReport, 1500)
	for i := range reports {
		reports[i] = &pdsv1.TopicStatusReport{TenantId: tenancy.DefaultTenantID, TopicName: "t", TopicId: uuid.NewString(),
			State: pdsv1.BrokerState_BROKER_STATE_FAILED, Message: strings.Repeat("é", 2500)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := reporter.ReportTopicStatus(ctx, reports); err != nil {
		t.Fatalf("report 1500 topics: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.requests) != 2 || len(rec.requests[0].GetTopics()) != 1000 || len(rec.requests[1].GetTopics()) != 500 {
		t.Fatalf("got %d requests, want 2 holding 1000 and 500 reports (the control plane's per-request limit)", len(rec.requests))
	}
	if n := utf8.RuneCountInString(rec.requests[0].GetTopics()[0].GetMessage()); n != 2000 || rec.requests[0].GetNodeId() != "dp-1" {
		t.Fatalf("sent message of %d characters from node %q, want 2000 (the control plane's limit) from dp-1", n, rec.requests[0].GetNodeId())
	}
	if n := utf8.RuneCountInString(reports[0].GetMessage()); n != 2500 {
		t.Fatalf("the caller's report was changed to %d characters; the reporter must not modify its input", n)
	}
}

// pulsarAdmin calls Pulsar's admin REST API; out, when not nil, receives the JSON answer.
func pulsarAdmin(ctx context.Context, method, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, body)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func TestBrokerSyncAppliesPartitionGrowthToPulsarAndReportsIt(t *testing.T) {
	serviceURL, adminURL := os.Getenv("PDS_TEST_PULSAR_URL"), os.Getenv("PDS_TEST_PULSAR_ADMIN_URL")
	if serviceURL == "" || adminURL == "" {
		t.Skip("PDS_TEST_PULSAR_URL and PDS_TEST_PULSAR_ADMIN_URL are not set: no Pulsar to test against (make test starts one)")
	}
	if testing.Short() {
		t.Skip("uses a real Pulsar; skipped with -short")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// A Pulsar tenant of this test's own, removed afterwards, so the shared Pulsar is left as found.
	prefix := "pds-bsync-" + uuid.NewString()[:8] + "-"
	b, err := broker.OpenPulsar(ctx, broker.PulsarOptions{ServiceURL: serviceURL, AdminURL: adminURL, TenantPrefix: prefix})
	if err != nil {
		t.Fatalf("open pulsar broker: %v", err)
	}
	topic := newTopic("portfolio/cash/updated", 2)
	pulsarTenant := prefix + topic.GetTenantId()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		ref := broker.TopicRef{TenantID: topic.GetTenantId(), ID: topic.GetId(), Name: topic.GetTopicName(), Partitions: 1}
		if err := b.DeleteTopic(ctx, ref); err != nil {
			t.Errorf("clean up: delete topic: %v", err)
		}
		_ = b.Close()
		for _, url := range []string{adminURL + "/admin/v2/namespaces/" + pulsarTenant + "/events", adminURL + "/admin/v2/tenants/" + pulsarTenant} {
			if err := pulsarAdmin(ctx, http.MethodDelete, url, nil); err != nil {
				t.Errorf("clean up: %v", err)
			}
		}
	})
	pulsarPartitions := func() int {
		var meta struct {
			Partitions int `json:"partitions"`
		}
		url := adminURL + "/admin/v2/persistent/" + pulsarTenant + "/events/" + topic.GetId() + "/partitions"
		if err := pulsarAdmin(ctx, http.MethodGet, url, &meta); err != nil {
			return -1
		}
		return meta.Partitions
	}

	rec := &statusRecorder{}
	cfg := &configLog{fsm: configfsm.New(filter.Compiler)}
	runSync(t, cfg.fsm, b, serveRecorder(t, rec))
	cfg.putTopic(t, topic)
	waitFor(t, "READY with 2 partitions from Pulsar", func() bool { return isReady(rec.latest(topic.GetId()), 2) })
	if got := pulsarPartitions(); got != 2 {
		t.Fatalf("Pulsar holds %d partitions after READY 2 was reported, want 2", got)
	}

	grown := proto.CloneOf(topic)
	grown.Partitions = 5
	cfg.putTopic(t, grown)
	waitFor(t, "READY with the grown 5 partitions", func() bool { return isReady(rec.latest(topic.GetId()), 5) })
	if got := pulsarPartitions(); got != 5 {
		t.Fatalf("Pulsar holds %d partitions after READY 5 was reported, want 5", got)
	}
}
