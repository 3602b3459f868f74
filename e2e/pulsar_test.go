package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
)

// The tests in this file run PDS on a real Apache Pulsar. Each traffic test logs
// "published=N delivered=N redelivered=N lost=N" and fails when an event whose Publish returned OK was lost.

// trafficInterval is how often a traffic test publishes a batch of trafficKeys events.
const trafficInterval = 20 * time.Millisecond

// drainTimeout bounds the wait for every published event once publishing stopped.
const drainTimeout = 90 * time.Second

// The skeleton's end-to-end scenarios, unchanged, on Pulsar.
func TestPulsarSkeletonScenarios(t *testing.T) {
	serviceURL, adminURL := pulsarFromEnv(t)
	onPulsar := pulsarBroker(serviceURL, adminURL)
	scenarios := []struct {
		name string
		run  func(t *testing.T, broker brokerSetup)
	}{
		{"StreamDeliversPublishedEventAsSpecificationJSON", streamDeliversPublishedEventAsSpecificationJSON},
		{"RESTStateReturnsLatestPublishedEvent", restStateReturnsLatestPublishedEvent},
		{"SubscriberThatDisconnectsWithoutAckGetsEventAgain", subscriberThatDisconnectsWithoutAckGetsEventAgain},
		{"PublishedEventsSurviveDataPlaneSIGKILL", publishedEventsSurviveDataPlaneSIGKILL},
		{"ManageSubscriptionOnDataPlaneIsImmediatelyStreamable", manageSubscriptionOnDataPlaneIsImmediatelyStreamable},
		{"WebSocketSubscriberReceivesAndAcknowledges", webSocketSubscriberReceivesAndAcknowledges},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, onPulsar)
		})
	}
}

// Two data-plane nodes stream one subscription (Key_Shared at Pulsar); one is SIGKILLed mid-stream with
// events it delivered but nobody acknowledged. The survivor delivers those events, every event whose
// Publish returned OK arrives, and each routing key's first deliveries stay in publish order.
func TestPulsarSubscriptionSurvivesNodeSIGKILL(t *testing.T) {
	serviceURL, adminURL := pulsarFromEnv(t)
	t.Parallel()
	c := startClusterOn(t, pulsarBroker(serviceURL, adminURL))
	second := c.addDataPlane("dp-2")
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4)
	version := c.createSubscription("shared-state", stateTopic, "reporting_analytics")
	second.process.waitConfigVersion(second.url, version)

	l := newLedger(t, true)
	// Both streams open at once, as two workflow replicas starting together would; like any client they open
	// their stream again when it fails (Unavailable is retryable).
	victim := startTrafficSubscriber(t, "dp-1", c.stream, "shared-state", l, true)
	survivor := startTrafficSubscriber(t, "dp-2", second.stream, "shared-state", l, true)
	// The survivor takes the publishes, so every failure the test sees comes from the kill of the victim.
	pub := startPublisher(t, second.stream, l, trafficInterval, false)

	waitFor(t, 60*time.Second, "both nodes to deliver 100 events each (Key_Shared spreads the keys over both streams)", func() bool {
		return l.deliveredCount("dp-1") >= 100 && l.deliveredCount("dp-2") >= 100
	}, func() string {
		return fmt.Sprintf("dp-1 delivered %d (stream: %v), dp-2 delivered %d (stream: %v)",
			l.deliveredCount("dp-1"), victim.lastErr.Load(), l.deliveredCount("dp-2"), survivor.lastErr.Load())
	})
	// From now on the victim's deliveries stay unacknowledged: they are what the survivor must take over.
	// An event recorded after this snapshot is surely unacknowledged (the subscriber records, then checks).
	victim.acking.Store(false)
	acked := l.deliveredIDs("dp-1")
	waitFor(t, 30*time.Second, "the victim to deliver 50 events it will never acknowledge", func() bool {
		return l.deliveredCount("dp-1") >= len(acked)+50
	})
	c.dataPlane.kill()
	killedAt := l.publishedCount()
	var unacked []string
	for id := range l.deliveredIDs("dp-1") {
		if !acked[id] {
			unacked = append(unacked, id)
		}
	}
	t.Logf("SIGKILLed dp-1 after %d publishes, holding %d delivered and unacknowledged events", killedAt, len(unacked))

	waitFor(t, 60*time.Second, "1000 more publishes after the kill", func() bool { return l.publishedCount() >= killedAt+1000 })
	pub.stop()
	l.waitAllDelivered(drainTimeout)
	if len(l.lost()) > 0 {
		logPulsarSubscriptionStats(t, adminURL, c.topicIDs[0])
	}
	survivor.stop()
	l.report(t)

	bySurvivor := l.deliveredIDs("dp-2")
	var notTakenOver []string
	for _, id := range unacked {
		if !bySurvivor[id] {
			notTakenOver = append(notTakenOver, id)
		}
	}
	if len(notTakenOver) > 0 {
		slices.Sort(notTakenOver)
		t.Errorf("the survivor never delivered %d of the %d events the killed node held unacknowledged, e.g. %v",
			len(notTakenOver), len(unacked), notTakenOver[:min(len(notTakenOver), 20)])
	}
	t.Logf("streams opened again: dp-1 %d times (last end: %v), dp-2 %d times (last end: %v)",
		victim.reconnects.Load(), victim.lastErr.Load(), survivor.reconnects.Load(), survivor.lastErr.Load())
}

// Pulsar stops and starts again while a producer keeps publishing (retrying failed calls, as a producer
// must) and a subscriber keeps streaming (reconnecting when its stream ends). Every event whose Publish
// returned OK, before, during or after the outage, is delivered.
func TestPulsarRestartDuringPublishing(t *testing.T) {
	pulsarFromEnv(t)
	if testing.Short() {
		t.Skip("end-to-end test: starts and restarts its own Pulsar")
	}
	// Not parallel: the test's own Pulsar is a second broker on a 2-core machine; alone it starts faster.
	own := startOwnPulsar(t)
	c := startClusterOn(t, pulsarBroker(own.serviceURL, own.adminURL))
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 4)
	c.createSubscription("restart-state", stateTopic, "reporting_analytics")

	l := newLedger(t, false)
	sub := startTrafficSubscriber(t, "dp-1", c.stream, "restart-state", l, true)
	pub := startPublisher(t, c.stream, l, trafficInterval, true)

	waitFor(t, 60*time.Second, "500 events published and delivered before the restart", func() bool {
		return l.publishedCount() >= 500 && l.deliveredCount("") >= 500
	})
	beforeStop := l.publishedCount()
	stopStarted := time.Now()
	own.stop()
	stopped := time.Now()
	own.start()
	restarted := time.Now()
	afterStart := l.publishedCount()
	t.Logf("Pulsar stopped in %v after %d publishes, started again in %v; %d publishes in between",
		stopped.Sub(stopStarted), beforeStop, restarted.Sub(stopped), afterStart-beforeStop)

	waitFor(t, 90*time.Second, "500 publishes after Pulsar came back", func() bool { return l.publishedCount() >= afterStart+500 })
	pub.stop()
	l.waitAllDelivered(drainTimeout)
	sub.stop()
	l.report(t)
	t.Logf("subscriber reconnected %d times; last stream end: %v", sub.reconnects.Load(), sub.lastErr.Load())
}

// A topic grows from 2 to 6 partitions through the admin API while events flow: Pulsar gets the new
// partitions, new events land on them, none is lost and each routing key keeps its order.
func TestPulsarPartitionIncreaseWhileTrafficFlows(t *testing.T) {
	serviceURL, adminURL := pulsarFromEnv(t)
	t.Parallel()
	c := startClusterOn(t, pulsarBroker(serviceURL, adminURL))
	c.createTopic(stateTopic, pdsv1.PortfolioDataType_PORTFOLIO_STATE, 2)
	c.createSubscription("growing-state", stateTopic, "reporting_analytics")

	l := newLedger(t, true)
	sub := startTrafficSubscriber(t, "dp-1", c.stream, "growing-state", l, false)
	// The producer retries a failed call with the same event ids, as producers must: the growth may make a
	// call fail (Unavailable) without losing anything, and the log line counts such calls.
	pub := startPublisher(t, c.stream, l, trafficInterval, true)

	waitFor(t, 60*time.Second, "300 events delivered on 2 partitions", func() bool { return l.deliveredCount("") >= 300 })
	if got := l.highestPartition(); got >= 2 {
		t.Fatalf("before the update Publish answered partition %d of a 2-partition topic", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.topics.UpdateTopic(ctx, connect.NewRequest(&pdsv1.UpdateTopicRequest{Topic: &pdsv1.Topic{
		TopicName: stateTopic, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: 6,
	}}))
	if err != nil {
		t.Fatalf("UpdateTopic to 6 partitions: %v", err)
	}
	if got := resp.Msg.GetTopic().GetPartitions(); got != 6 {
		t.Fatalf("UpdateTopic answered partitions=%d, want 6", got)
	}
	updatedAt := l.publishedCount()

	publishState := func() string {
		return fmt.Sprintf("(%d publishes so far, last failed call: %v)", l.publishedCount(), pub.lastErr.Load())
	}
	waitFor(t, 60*time.Second, "a Publish answering a partition >= 2 (one of the new ones)", func() bool { return l.highestPartition() >= 2 }, publishState)
	onNew := l.publishedCount()
	waitFor(t, 60*time.Second, "500 more publishes on 6 partitions", func() bool { return l.publishedCount() >= onNew+500 }, publishState)
	pub.stop()
	l.waitAllDelivered(drainTimeout)
	sub.stop()
	l.report(t)
	t.Logf("updated after %d publishes; first publish on a new partition within the next %d", updatedAt, onNew-updatedAt)

	partitions, err := pulsarPartitions(adminURL, c.topicIDs[0])
	if err != nil {
		t.Fatalf("read the topic's partitions at Pulsar: %v", err)
	}
	if partitions != 6 {
		t.Errorf("Pulsar holds %d partitions after UpdateTopic to 6", partitions)
	}
}

// dataPlaneNode is a data plane started in addition to the cluster's first one.
type dataPlaneNode struct {
	process *process
	url     string
	stream  pdsv1connect.PortfolioStreamClient
}

// addDataPlane starts another data-plane node of the cluster, on the cluster's broker, and waits until it
// is ready.
func (c *cluster) addDataPlane(nodeID string) *dataPlaneNode {
	c.t.Helper()
	httpAddr := freeAddr(c.t)
	n := &dataPlaneNode{url: "http://" + httpAddr}
	n.process = startProcess(c.t, "pds-dataplane "+nodeID, binaries.dataPlane,
		c.dataPlaneArgs(nodeID, httpAddr, freeAddr(c.t), filepath.Join(c.t.TempDir(), nodeID))...)
	n.process.waitReady(n.url)
	n.stream = pdsv1connect.NewPortfolioStreamClient(&http.Client{}, n.url)
	return n
}
