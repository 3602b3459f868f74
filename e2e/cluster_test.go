package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/db/pgtest"
)

// callTimeout bounds one unary API call.
const callTimeout = 30 * time.Second

// cluster is one control plane and one data plane on their own database, ports and data directories; the
// data plane uses the broker the cluster was started on (the embedded one unless a test says otherwise).
type cluster struct {
	t            *testing.T
	broker       brokerSetup
	controlPlane *process
	dataPlane    *process
	cpURL, dpURL string
	dpHTTPAddr   string
	dpRaftAddr   string
	dpDataDir    string
	// topicIDs are the ids of the topics the test created, for brokers that outlive the test.
	topicIDs []string

	topics        pdsv1connect.TopicServiceClient
	subscriptions pdsv1connect.SubscriptionServiceClient
	stream        pdsv1connect.PortfolioStreamClient
}

// brokerSetup says which broker the data planes of a cluster use.
type brokerSetup struct {
	// args are the data plane's broker flags.
	args []string
	// prepare, when set, runs before the cluster's processes start; cleanups it registers run after they stopped.
	prepare func(c *cluster)
}

// embeddedBroker is the data plane's default: the in-process broker keeping its data in --data-dir.
var embeddedBroker = brokerSetup{args: []string{"--broker", "embedded"}}

// startCluster starts a cluster on the embedded broker.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	return startClusterOn(t, embeddedBroker)
}

// startClusterOn starts a control plane and one data plane using broker.
func startClusterOn(t *testing.T, broker brokerSetup) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: starts PostgreSQL and PDS processes")
	}
	databaseURL := pgtest.NewDatabase(t)
	cpHTTP := freeAddr(t)
	c := &cluster{
		t:          t,
		broker:     broker,
		cpURL:      "http://" + cpHTTP,
		dpHTTPAddr: freeAddr(t),
		dpRaftAddr: freeAddr(t),
		dpDataDir:  filepath.Join(t.TempDir(), "dataplane"),
	}
	c.dpURL = "http://" + c.dpHTTPAddr
	if broker.prepare != nil {
		broker.prepare(c)
	}
	c.controlPlane = startProcess(t, "pds-controlplane", binaries.controlPlane,
		"--http-addr", cpHTTP,
		"--raft-addr", freeAddr(t),
		"--node-id", "cp-1",
		"--data-dir", filepath.Join(t.TempDir(), "controlplane"),
		"--database-url", databaseURL)
	c.controlPlane.waitReady(c.cpURL)
	c.startDataPlane()

	httpClient := &http.Client{}
	c.topics = pdsv1connect.NewTopicServiceClient(httpClient, c.cpURL)
	c.subscriptions = pdsv1connect.NewSubscriptionServiceClient(httpClient, c.cpURL)
	c.stream = pdsv1connect.NewPortfolioStreamClient(httpClient, c.dpURL)
	return c
}

// startDataPlane starts the data plane on the cluster's ports and data directory and waits until it is ready.
func (c *cluster) startDataPlane() {
	c.t.Helper()
	c.dataPlane = startProcess(c.t, "pds-dataplane", binaries.dataPlane, c.dataPlaneArgs("dp-1", c.dpHTTPAddr, c.dpRaftAddr, c.dpDataDir)...)
	c.dataPlane.waitReady(c.dpURL)
}

// dataPlaneArgs are the command-line arguments of a data plane of this cluster.
func (c *cluster) dataPlaneArgs(nodeID, httpAddr, raftAddr, dataDir string) []string {
	args := []string{
		"--http-addr", httpAddr,
		"--raft-addr", raftAddr,
		"--node-id", nodeID,
		"--controlplane-url", c.cpURL,
		"--data-dir", dataDir,
	}
	return append(args, c.broker.args...)
}

// createTopic creates a topic through the control plane's admin API and waits until the data plane has it.
func (c *cluster) createTopic(name string, dataType pdsv1.PortfolioDataType, partitions int32) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.topics.CreateTopic(ctx, connect.NewRequest(&pdsv1.CreateTopicRequest{Topic: &pdsv1.Topic{
		TopicName: name, DataType: dataType, Partitions: partitions,
	}}))
	if err != nil {
		c.t.Fatalf("CreateTopic %q: %v", name, err)
	}
	if !resp.Msg.GetTopic().GetEnabled() {
		c.t.Fatalf("CreateTopic %q returned a disabled topic: %v", name, resp.Msg.GetTopic())
	}
	c.topicIDs = append(c.topicIDs, resp.Msg.GetTopic().GetId())
	c.dataPlane.waitConfigVersion(c.dpURL, resp.Msg.GetConfigVersion())
}

// createSubscription creates a subscription through the control plane's admin API, waits until the data
// plane has it and returns the config version that holds it.
func (c *cluster) createSubscription(id, topic, workflow string) uint64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.subscriptions.CreateSubscription(ctx, connect.NewRequest(&pdsv1.CreateSubscriptionRequest{
		Subscription: &pdsv1.Subscription{SubscriptionId: id, TopicName: topic, SubscriberWorkflow: workflow},
	}))
	if err != nil {
		c.t.Fatalf("CreateSubscription %q: %v", id, err)
	}
	if got := resp.Msg.GetSubscription().GetStatus(); got != "active" {
		c.t.Fatalf("CreateSubscription %q: status %q, want \"active\"", id, got)
	}
	c.dataPlane.waitConfigVersion(c.dpURL, resp.Msg.GetConfigVersion())
	return resp.Msg.GetConfigVersion()
}

// publish publishes events and fails the test unless PDS stored all of them.
func (c *cluster) publish(events ...*pdsv1.PortfolioDistribution) []*pdsv1.PublishedEvent {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.stream.Publish(ctx, connect.NewRequest(&pdsv1.PublishRequest{Events: events}))
	if err != nil {
		c.t.Fatalf("Publish %d events: %v", len(events), err)
	}
	if got := len(resp.Msg.GetEvents()); got != len(events) {
		c.t.Fatalf("Publish %d events answered for %d", len(events), got)
	}
	return resp.Msg.GetEvents()
}

// acknowledge acknowledges delivered events and fails the test when the data plane did not know an ack id.
func (c *cluster) acknowledge(subscriptionID string, events ...*pdsv1.DeliveredEvent) {
	c.t.Helper()
	ids := make([]string, 0, len(events))
	for _, ev := range events {
		ids = append(ids, ev.GetAckId())
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.stream.Acknowledge(ctx, connect.NewRequest(&pdsv1.AcknowledgeRequest{
		SubscriptionId: subscriptionID, AckIds: ids,
	}))
	if err != nil {
		c.t.Fatalf("Acknowledge %d events: %v", len(ids), err)
	}
	if unknown := resp.Msg.GetUnknownAckIds(); len(unknown) > 0 {
		c.t.Fatalf("Acknowledge: the data plane did not know ack ids %q", unknown)
	}
}
