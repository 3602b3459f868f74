package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
	"github.com/google/uuid"
)

// pulsarTestEnv returns the Pulsar under test, or skips: under -short, and when no Pulsar is named (make
// test starts one and sets both variables).
func pulsarTestEnv(t testing.TB) (serviceURL, adminURL string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs against a real Pulsar")
	}
	serviceURL, adminURL = os.Getenv("PDS_TEST_PULSAR_URL"), os.Getenv("PDS_TEST_PULSAR_ADMIN_URL")
	if serviceURL == "" || adminURL == "" {
		t.Skip("PDS_TEST_PULSAR_URL and PDS_TEST_PULSAR_ADMIN_URL are not set: no Pulsar to test against (make test starts one)")
	}
	return serviceURL, adminURL
}

// newPulsarTenantPrefix returns a tenant prefix no other test uses; the test's cleanup deletes every
// Pulsar tenant under it, with its namespaces and topics.
func newPulsarTenantPrefix(t testing.TB, adminURL string) string {
	t.Helper()
	prefix := "pdstest-" + strings.ReplaceAll(uuid.NewString()[:13], "-", "") + "-"
	t.Cleanup(func() { deletePulsarTenants(t, adminURL, prefix) })
	return prefix
}

func deletePulsarTenants(t testing.TB, adminURL, prefix string) {
	admin, err := pulsaradmin.NewClient(&pulsaradmin.Config{WebServiceURL: adminURL})
	if err != nil {
		t.Errorf("cleanup: admin client: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Until none is left: an admin call that was under way when its broker closed may still create one.
	var lastErr error
	for ctx.Err() == nil {
		tenants, err := admin.Tenants().ListWithContext(ctx)
		if err != nil {
			t.Errorf("cleanup: list tenants: %v", err)
			return
		}
		left := 0
		for _, tenant := range tenants {
			if strings.HasPrefix(tenant, prefix) {
				left++
				lastErr = deletePulsarTenant(ctx, admin, tenant)
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition with a deadline
	}
	t.Errorf("cleanup: Pulsar tenants with prefix %s are left: %v", prefix, lastErr)
}

func deletePulsarTenant(ctx context.Context, admin pulsaradmin.Client, tenant string) error {
	namespaces, err := admin.Namespaces().GetNamespacesWithContext(ctx, tenant)
	if err != nil {
		return fmt.Errorf("list namespaces of %s: %w", tenant, err)
	}
	for _, ns := range namespaces {
		if err := deletePulsarNamespace(ctx, admin, ns); err != nil {
			return err
		}
	}
	if err := admin.Tenants().DeleteWithContext(ctx, tenant); err != nil {
		return fmt.Errorf("delete tenant %s: %w", tenant, err)
	}
	return nil
}

// deletePulsarNamespace force-deletes the namespace's topics (with their subscriptions), then the
// namespace: brokers refuse force deletion of a whole namespace by default.
func deletePulsarNamespace(ctx context.Context, admin pulsaradmin.Client, ns string) error {
	name, err := utils.GetNamespaceName(ns)
	if err != nil {
		return err
	}
	partitioned, plain, err := admin.Topics().ListWithContext(ctx, *name)
	if err != nil {
		return fmt.Errorf("list topics of %s: %w", ns, err)
	}
	parents := map[string]bool{}
	for _, topic := range partitioned {
		parents[topic] = true
	}
	for _, list := range []struct {
		topics         []string
		nonPartitioned bool
	}{{partitioned, false}, {plain, true}} {
		for _, topic := range list.topics {
			if parent, _, ok := strings.Cut(topic, "-partition-"); list.nonPartitioned && ok && parents[parent] {
				continue // deleted with its partitioned topic
			}
			// A partition whose partitioned topic is gone (a client recreated it while the topic was being
			// deleted) is deleted on its own, or the namespace never empties.
			tn, err := utils.GetTopicName(topic)
			if err != nil {
				return err
			}
			if err := admin.Topics().DeleteWithContext(ctx, *tn, true, list.nonPartitioned); err != nil && !isAdminStatus(err, 404) {
				return fmt.Errorf("delete topic %s: %w", topic, err)
			}
		}
	}
	if err := admin.Namespaces().DeleteNamespaceWithContext(ctx, ns); err != nil {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return nil
}

func openPulsarForTest(t testing.TB, serviceURL, adminURL, prefix string) *PulsarBroker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, err := OpenPulsar(ctx, PulsarOptions{ServiceURL: serviceURL, AdminURL: adminURL, TenantPrefix: prefix, Logger: logOnFailure(t)})
	if err != nil {
		t.Fatalf("OpenPulsar(%s, %s): %v", serviceURL, adminURL, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestPulsarConformance(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	prefixes := sync.Map{} // Broker -> its tenant prefix, for reopen
	runConformance(t, conformanceDriver{
		newBroker: func(t *testing.T) Broker {
			prefix := newPulsarTenantPrefix(t, adminURL)
			b := openPulsarForTest(t, serviceURL, adminURL, prefix)
			prefixes.Store(b, prefix)
			return b
		},
		reopen: func(t *testing.T, old Broker) Broker {
			prefix, ok := prefixes.Load(old)
			if !ok {
				t.Fatal("reopen of a broker the suite did not open")
			}
			if err := old.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			b := openPulsarForTest(t, serviceURL, adminURL, prefix.(string))
			prefixes.Store(b, prefix)
			return b
		},
	})
}

// rawPulsarClient is a plain pulsar-client-go client, to look at what the driver stored.
func rawPulsarClient(t *testing.T, serviceURL string) pulsar.Client {
	t.Helper()
	c, err := pulsar.NewClient(pulsar.ClientOptions{URL: serviceURL, Logger: pulsarlog.NewLoggerWithSlog(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatalf("pulsar client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestPulsarMessagesCarryKeyPartitionAndProperties(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	b := openPulsarForTest(t, serviceURL, adminURL, newPulsarTenantPrefix(t, adminURL))
	topic := newTopic(t, b, 3)
	cases := []struct {
		name   string
		record Record
	}{
		{"no properties of its own", Record{Partition: 0, Key: "PF-1.state.update", EventID: "ev-plain", Value: []byte("a")}},
		{"routing properties", Record{Partition: 2, Key: "PF-2.performance.update", EventID: "ev-props", Value: []byte("b"),
			Properties: map[string]string{"data_type": "PERFORMANCE_ATTRIBUTION", "priority": "5", "target_workflows": "risk,ops", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}},
	}
	// Read with a plain client, as a producer service or an operator tool reading Pulsar directly would.
	raw, err := rawPulsarClient(t, serviceURL).Subscribe(pulsar.ConsumerOptions{
		Topic: b.topicNames(topic).topic, SubscriptionName: "raw-reader", Type: pulsar.Exclusive,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest,
	})
	if err != nil {
		t.Fatalf("raw subscribe: %v", err)
	}
	t.Cleanup(raw.Close)
	for _, tc := range cases {
		publish(t, b, topic, []Record{tc.record})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	got := map[string]pulsar.Message{}
	for len(got) < len(cases) {
		m, err := raw.Receive(ctx)
		if err != nil {
			t.Fatalf("raw receive after %d of %d messages: %v", len(got), len(cases), err)
		}
		got[m.Properties()[PropertyEventID]] = m
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := got[tc.record.EventID]
			if !ok {
				t.Fatalf("no message with property %s=%s", PropertyEventID, tc.record.EventID)
			}
			if m.Key() != tc.record.Key {
				t.Errorf("message key %q, want the routing key %q", m.Key(), tc.record.Key)
			}
			if wantSuffix := fmt.Sprintf("-partition-%d", tc.record.Partition); !strings.HasSuffix(m.Topic(), wantSuffix) {
				t.Errorf("message stored in %s, want partition %d", m.Topic(), tc.record.Partition)
			}
			for k, v := range tc.record.Properties {
				if m.Properties()[k] != v {
					t.Errorf("property %s = %q, want %q", k, m.Properties()[k], v)
				}
			}
		})
	}
}

func TestPulsarKeySharedKeepsOrderPerKeyAcrossTwoConsumers(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	prefix := newPulsarTenantPrefix(t, adminURL)
	// Two brokers stand for two data-plane nodes serving one subscription.
	nodes := []*PulsarBroker{openPulsarForTest(t, serviceURL, adminURL, prefix), openPulsarForTest(t, serviceURL, adminURL, prefix)}
	const partitions, keys, perKey = 2, 40, 50
	topic := newTopic(t, nodes[0], partitions)
	sub := newSubscription(topic)
	consumers := []Consumer{subscribe(t, nodes[0], sub, ConsumerOptions{MaxUnacked: 100}), subscribe(t, nodes[1], sub, ConsumerOptions{MaxUnacked: 100})}

	record := func(k, i int) Record {
		key := fmt.Sprintf("PF-%d.state.update", k)
		return Record{Partition: k % partitions, Key: key, EventID: fmt.Sprintf("%s#%d", key, i), Value: []byte{byte(i)}}
	}
	// From both nodes at once, each in order for its keys: node 0 publishes even keys, node 1 odd ones.
	errs := make(chan error, 2*keys*perKey+len(nodes))
	var wg sync.WaitGroup
	for n, node := range nodes {
		var mine []Record
		for i := range perKey {
			for k := n; k < keys; k += 2 {
				mine = append(mine, record(k, i))
			}
		}
		wg.Go(func() {
			for i := 0; i < len(mine); i += 25 {
				if err := node.Publish(context.Background(), topic, mine[i:min(i+25, len(mine))]); err != nil {
					errs <- fmt.Errorf("node %d: Publish: %w", n, err)
					return
				}
			}
		})
	}

	var mu sync.Mutex
	last := map[string]keySeen{}
	delivered, redelivered := 0, 0
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for ci, c := range consumers {
		wg.Go(func() {
			for {
				mu.Lock()
				done := len(last) == keys && allAt(last, perKey-1)
				mu.Unlock()
				if done {
					cancel()
					return
				}
				batch, err := c.Receive(ctx, 50)
				if err != nil {
					return
				}
				mu.Lock()
				for _, dl := range batch {
					key, seqText, _ := strings.Cut(dl.EventID, "#")
					var seq int
					fmt.Sscan(seqText, &seq)
					delivered++
					if dl.Attempt > 1 {
						redelivered++
					}
					prev, ok := last[key]
					switch {
					case ok && prev.consumer != ci:
						errs <- fmt.Errorf("key %s delivered to consumer %d after consumer %d held it", key, ci, prev.consumer)
					case ok && seq != prev.seq+1:
						errs <- fmt.Errorf("key %s: consumer %d got #%d after #%d", key, ci, seq, prev.seq)
					case !ok && seq != 0:
						errs <- fmt.Errorf("key %s: first delivery is #%d", key, seq)
					}
					last[key] = keySeen{consumer: ci, seq: seq}
				}
				mu.Unlock()
				_ = c.Ack(ctx, handles(batch)...)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	perConsumer := map[int]int{}
	lost := 0
	for k := range keys {
		s, ok := last[fmt.Sprintf("PF-%d.state.update", k)]
		if !ok {
			lost += perKey
			continue
		}
		lost += perKey - 1 - s.seq
		perConsumer[s.consumer]++
	}
	t.Logf("published %d, delivered %d, redelivered %d, lost %d; keys per consumer %v", keys*perKey, delivered, redelivered, lost, perConsumer)
	if lost > 0 {
		t.Fatalf("%d published records never delivered", lost)
	}
	if len(perConsumer) != 2 {
		t.Fatalf("keys per consumer %v: the two consumers did not share the subscription", perConsumer)
	}
}

// keySeen is the newest delivery of one key: which consumer had it and its sequence number.
type keySeen struct {
	consumer int
	seq      int
}

func allAt(last map[string]keySeen, seq int) bool {
	for _, s := range last {
		if s.seq != seq {
			return false
		}
	}
	return true
}

func TestPulsarPartitionIncreaseWhilePublishing(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	prefix := newPulsarTenantPrefix(t, adminURL)
	// The admin node grows the topic while another node keeps publishing with its cached producer.
	admin, publisher := openPulsarForTest(t, serviceURL, adminURL, prefix), openPulsarForTest(t, serviceURL, adminURL, prefix)
	const before, after = 2, 5
	topic := newTopic(t, admin, before)
	c := subscribe(t, admin, newSubscription(topic), ConsumerOptions{MaxUnacked: 5000})

	var partitions atomic.Int64
	partitions.Store(before)
	var published sync.Map // event ID -> partition
	var count atomic.Int64
	stop := make(chan struct{})
	publishErr := make(chan error, 1)
	go func() {
		defer close(publishErr)
		for i := 0; ; i += 10 {
			select {
			case <-stop:
				return
			default:
			}
			n := int(partitions.Load())
			ref := topic
			ref.Partitions = n
			batch := make([]Record, 10)
			for j := range batch {
				batch[j] = Record{Partition: (i + j) % n, Key: fmt.Sprintf("PF-%d.state.update", (i+j)%n), EventID: fmt.Sprintf("grow-%d", i+j), Value: []byte("v")}
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			err := publisher.Publish(ctx, ref, batch)
			cancel()
			if err != nil {
				publishErr <- fmt.Errorf("Publish while %d partitions: %w", n, err)
				return
			}
			for _, r := range batch {
				published.Store(r.EventID, r.Partition)
			}
			count.Add(int64(len(batch)))
		}
	}()
	waitForCount := func(n int64) {
		deadline := time.Now().Add(waitTimeout)
		for count.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d records published, want %d", count.Load(), n)
			}
			time.Sleep(5 * time.Millisecond) // polling a counter with a deadline
		}
	}
	waitForCount(300)
	grown := topic
	grown.Partitions = after
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := admin.EnsureTopic(ctx, grown); err != nil {
		t.Fatalf("EnsureTopic %d -> %d partitions: %v", before, after, err)
	}
	partitions.Store(after)
	waitForCount(count.Load() + 500)
	close(stop)
	if err := <-publishErr; err != nil {
		t.Fatal(err)
	}

	want := map[string]int{}
	published.Range(func(k, v any) bool { want[k.(string)] = v.(int); return true })
	total := len(want)
	delivered, redelivered := 0, 0
	seenPartitions := map[int]int{}
	for len(want) > 0 {
		batch, err := c.Receive(ctx, 1000)
		if err != nil {
			t.Fatalf("published %d, %d never delivered (e.g. partition %d): %v", total, len(want), firstPartition(want), err)
		}
		for _, dl := range batch {
			delivered++
			if dl.Attempt > 1 {
				redelivered++
			}
			if p, ok := want[dl.EventID]; ok {
				if p != dl.Partition {
					t.Errorf("event %s routed to partition %d arrived from partition %d", dl.EventID, p, dl.Partition)
				}
				delete(want, dl.EventID)
				seenPartitions[dl.Partition]++
			}
		}
		_ = c.Ack(ctx, handles(batch)...)
	}
	t.Logf("published %d, delivered %d, redelivered %d, lost %d; records per partition %v", total, delivered, redelivered, len(want), seenPartitions)
	for p := range after {
		if seenPartitions[p] == 0 {
			t.Fatalf("no record delivered from partition %d after growing to %d; per partition %v", p, after, seenPartitions)
		}
	}
}

func firstPartition(m map[string]int) int {
	for _, p := range m {
		return p
	}
	return -1
}

// BenchmarkPulsarPublish measures stored records per second from benchPublishers concurrent callers,
// with one record per Publish call and with 100.
func BenchmarkPulsarPublish(b *testing.B) {
	serviceURL, adminURL := pulsarTestEnv(b)
	for _, perCall := range []int{1, 100} {
		b.Run(fmt.Sprintf("records-per-call=%d", perCall), func(b *testing.B) {
			br := openPulsarForTest(b, serviceURL, adminURL, newPulsarTenantPrefix(b, adminURL))
			topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "bench", Partitions: benchPartitions}
			if err := br.EnsureTopic(context.Background(), topic); err != nil {
				b.Fatal(err)
			}
			benchPublish(b, br, topic, perCall)
		})
	}
}

// BenchmarkPulsarPublishReceive measures records per second through Publish, Receive and Ack and the
// publish-to-receive latency at saturation (benchPublishers callers, one consumer), and the same through
// a plain pulsar-client-go producer and Key_Shared consumer as the baseline of the run.
func BenchmarkPulsarPublishReceive(b *testing.B) {
	serviceURL, adminURL := pulsarTestEnv(b)
	for _, perCall := range []int{1, 100} {
		b.Run(fmt.Sprintf("driver/records-per-call=%d", perCall), func(b *testing.B) {
			br := openPulsarForTest(b, serviceURL, adminURL, newPulsarTenantPrefix(b, adminURL))
			benchBrokerPublishReceive(b, br, perCall)
		})
	}
	b.Run("baseline=raw-client", func(b *testing.B) {
		br := openPulsarForTest(b, serviceURL, adminURL, newPulsarTenantPrefix(b, adminURL))
		benchRawPublishReceive(b, br)
	})
}

// benchRawPublishReceive is the baseline: pulsar-client-go's own producer (key-based batching, the
// same 1ms delay) and Key_Shared consumer on a topic the driver created, with one message per SendAsync.
func benchRawPublishReceive(b *testing.B, br *PulsarBroker) {
	topic := TopicRef{TenantID: conformanceTenant, ID: uuid.NewString(), Name: "bench", Partitions: benchPartitions}
	ctx := context.Background()
	if err := br.EnsureTopic(ctx, topic); err != nil {
		b.Fatal(err)
	}
	name := br.topicNames(topic).topic
	consumer, err := br.client.Subscribe(pulsar.ConsumerOptions{Topic: name, SubscriptionName: "bench", Type: pulsar.KeyShared,
		SubscriptionInitialPosition: pulsar.SubscriptionPositionEarliest, ReceiverQueueSize: 1000, EnableBatchIndexAcknowledgment: true})
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	producer, err := br.client.CreateProducer(pulsar.ProducerOptions{Topic: name, BatchingMaxPublishDelay: time.Millisecond, BatcherBuilderType: pulsar.KeyBasedBatchBuilder})
	if err != nil {
		b.Fatal(err)
	}
	defer producer.Close()
	latencies := make([]time.Duration, 0, b.N)
	received := make(chan struct{})
	go func() {
		defer close(received)
		for len(latencies) < b.N {
			m, err := consumer.Receive(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			latencies = append(latencies, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(m.Payload())))))
			_ = consumer.Ack(m)
		}
	}()
	var next atomic.Int64
	b.SetParallelism(benchPublishers / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			value := make([]byte, benchValueBytes)
			binary.BigEndian.PutUint64(value, uint64(time.Now().UnixNano()))
			// Wait for the send like Publish does, so both sides measure a durably stored record.
			if _, err := producer.Send(ctx, &pulsar.ProducerMessage{Key: fmt.Sprintf("PF-%d", n%64), Payload: value, Properties: map[string]string{PropertyEventID: "e"}}); err != nil {
				b.Error(err)
			}
		}
	})
	<-received
	b.StopTimer()
	reportLatencies(b, latencies)
}

func TestOpenPulsarNamesTheUnreachableAdminAPI(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		opts    PulsarOptions
		wantErr string
	}{
		{"no service URL", PulsarOptions{AdminURL: "http://127.0.0.1:8085"}, "ServiceURL is required"},
		{"no admin URL", PulsarOptions{ServiceURL: "pulsar://127.0.0.1:6650"}, "AdminURL is required"},
		// Port 1 refuses connections: the driver retries until ctx ends, then names the URL.
		{"admin API refusing connections", PulsarOptions{ServiceURL: "pulsar://127.0.0.1:1", AdminURL: "http://127.0.0.1:1"}, "http://127.0.0.1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			b, err := OpenPulsar(ctx, tc.opts)
			if err == nil {
				_ = b.Close()
				t.Fatalf("OpenPulsar succeeded, want an error mentioning %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("OpenPulsar: %v; want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestPulsarPartitionOfAndReceiverQueue(t *testing.T) {
	t.Parallel()
	partitionCases := []struct {
		topic string
		want  int
	}{
		{"persistent://pds-t/events/abc-partition-0", 0},
		{"persistent://pds-t/events/abc-partition-17", 17},
		{"persistent://pds-t/events/a-partition-x-partition-3", 3},
		{"persistent://pds-t/events/latest-state", 0},
	}
	for _, tc := range partitionCases {
		if got := partitionOf(tc.topic); got != tc.want {
			t.Errorf("partitionOf(%q) = %d, want %d", tc.topic, got, tc.want)
		}
	}
	queueCases := []struct {
		name                   string
		maxUnacked, partitions int
		want                   int
	}{
		{"spread over partitions", 1000, 4, 250},
		{"at least a few per partition", 5, 2, minReceiverQueue},
		{"capped", 10000, 1, maxReceiverQueue},
		{"zero partitions counts as one", 100, 0, 100},
	}
	for _, tc := range queueCases {
		if got := receiverQueueSize(tc.maxUnacked, tc.partitions); got != tc.want {
			t.Errorf("%s: receiverQueueSize(%d, %d) = %d, want %d", tc.name, tc.maxUnacked, tc.partitions, got, tc.want)
		}
	}
}

func TestPulsarRecordsReleasedByClosedConsumerComeBackAsAttempt2(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	// Pulsar keeps redelivery counts only while the subscription has a consumer. With another consumer
	// attached (streams or nodes sharing a subscription) Pulsar counts the nack the closing consumer sends
	// before it leaves; with none left (a subscriber reconnecting) the broker remembers the attempts. The
	// test once subscribed right after Close returned and passed only while that Subscribe outran the
	// background close.
	cases := []struct {
		name          string
		attachedFirst bool // the second consumer subscribes before the first closes
	}{
		{"another consumer attached", true},
		{"no consumer left", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := openPulsarForTest(t, serviceURL, adminURL, newPulsarTenantPrefix(t, adminURL))
			topic := newTopic(t, b, 2)
			records := makeRecords("released", 10, 2)
			publish(t, b, topic, records)
			sub := newSubscription(topic)
			opts := ConsumerOptions{AckDeadline: time.Minute}
			first := subscribe(t, b, sub, opts)
			taken := receiveN(t, first, len(records), false)
			for _, dl := range taken {
				if dl.Attempt != 1 {
					t.Fatalf("event %q first delivered with Attempt %d, want 1", dl.EventID, dl.Attempt)
				}
			}
			var second Consumer
			if tc.attachedFirst {
				second = subscribe(t, b, sub, opts)
			}
			if err := first.Close(); err != nil {
				t.Fatalf("Close consumer: %v", err)
			}
			if !tc.attachedFirst {
				waitDetached(t, b, first.(*pulsarConsumer))
				second = subscribe(t, b, sub, opts)
			}
			again := receiveN(t, second, len(records), true)
			assertSameIDs(t, "records released by the closed consumer", eventIDs(again), eventIDs(taken))
			for _, dl := range again {
				if dl.Attempt < 2 {
					t.Errorf("event %q delivered again after its consumer closed with Attempt %d, want 2 or more", dl.EventID, dl.Attempt)
				}
			}
		})
	}
}

// waitDetached waits until c finished closing its Pulsar consumers (Close does that in the background).
func waitDetached(t *testing.T, b *PulsarBroker, c *pulsarConsumer) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		b.mu.Lock()
		_, attached := b.consumers[c]
		b.mu.Unlock()
		if !attached {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer still closing after %v", waitTimeout)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

func TestPulsarTwoNodesGrowingOneTopicAtOnceBothSucceed(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	prefix := newPulsarTenantPrefix(t, adminURL)
	nodes := []*PulsarBroker{openPulsarForTest(t, serviceURL, adminURL, prefix), openPulsarForTest(t, serviceURL, adminURL, prefix)}
	topic := newTopic(t, nodes[0], 1)
	for _, partitions := range []int{2, 3, 5, 8} {
		grown := topic
		grown.Partitions = partitions
		errs := make(chan error, len(nodes))
		var wg sync.WaitGroup
		for i, node := range nodes {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				if err := node.EnsureTopic(ctx, grown); err != nil {
					errs <- fmt.Errorf("node %d: EnsureTopic(%d partitions): %w", i, partitions, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}

// A consumer stays attached while its subscription is sought back to the earliest record, round after
// round, right after acknowledging everything: every round must replay every record. Acks still on
// their way to Pulsar when the cursor is reset would mark replayed records consumed again (the client
// groups acks for up to 100ms by default, and drops incoming records whose ack is still pending).
func TestPulsarSeekToEarliestWithConsumerAttachedReplaysAcknowledgedRecords(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	b := openPulsarForTest(t, serviceURL, adminURL, newPulsarTenantPrefix(t, adminURL))
	topic := newTopic(t, b, 2)
	records := makeRecords("replayed", 12, 2)
	publish(t, b, topic, records)
	sub := newSubscription(topic)
	c := subscribe(t, b, sub, ConsumerOptions{AckDeadline: time.Minute})
	want := sortedIDs(records)
	const rounds = 8
	for round := range rounds + 1 {
		if round > 0 {
			seekTo(t, b, sub, SeekPosition{Earliest: true})
		}
		got := receiveDistinct(t, c, want)
		assertSameIDs(t, fmt.Sprintf("records delivered in round %d (after %d seeks to the earliest)", round, round), got, want)
	}
}

// receiveDistinct receives and acknowledges until every id of want arrived (duplicates are allowed) and
// returns the distinct ids received, sorted; it fails naming the missing ids when they do not arrive.
func receiveDistinct(t *testing.T, c Consumer, want []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	missing := map[string]bool{}
	for _, id := range want {
		missing[id] = true
	}
	seen := map[string]bool{}
	for len(missing) > 0 {
		batch, err := c.Receive(ctx, 100)
		if err != nil {
			t.Fatalf("Receive with %d of %d records missing (%v): %v", len(missing), len(want), slices.Sorted(maps.Keys(missing)), err)
		}
		if err := c.Ack(ctx, handles(batch)...); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		for _, dl := range batch {
			seen[dl.EventID] = true
			delete(missing, dl.EventID)
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// A partition consumer that Pulsar no longer has while the client believes it attached (the client can
// miss Pulsar's close notice when it arrives during the subscribe) is found idle and unlisted in the topic's
// stats and replaced, so its partition's records flow again. The test stands in for the lost notice by
// closing that consumer under the driver's feet: Pulsar forgets it, the driver still holds it.
func TestPulsarReplacesAPartitionConsumerPulsarDropped(t *testing.T) {
	serviceURL, adminURL := pulsarTestEnv(t)
	t.Parallel()
	prefix := newPulsarTenantPrefix(t, adminURL)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, err := OpenPulsar(ctx, PulsarOptions{ServiceURL: serviceURL, AdminURL: adminURL, TenantPrefix: prefix, Logger: logOnFailure(t)})
	if err != nil {
		t.Fatalf("OpenPulsar: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	topic := newTopic(t, b, 2)
	c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
	publish(t, b, topic, makeRecords("before", 4, 2))
	receiveN(t, c, 4, true)

	pc := c.(*pulsarConsumer)
	pc.partMu.Lock()
	var dropped *partitionConsumer
	var droppedTopic string
	for pt, entry := range pc.partitions {
		if partitionOf(pt) == 0 {
			dropped, droppedTopic = entry, pt
		}
	}
	pc.partMu.Unlock()
	if dropped == nil {
		t.Fatal("no consumer of partition 0")
	}
	dropped.pc.Close()

	after := makeRecords("after", 6, 2)
	publish(t, b, topic, after)
	got := receiveN(t, c, len(after), true)
	assertSameIDs(t, "records published after partition 0's consumer was dropped", eventIDs(got), sortedIDs(after))
	pc.partMu.Lock()
	replacement := pc.partitions[droppedTopic]
	pc.partMu.Unlock()
	if replacement == nil || replacement == dropped {
		t.Errorf("partition 0's consumer was not replaced")
	}
}

func TestPulsarPartitionProblem(t *testing.T) {
	t.Parallel()
	const pt, sub, me = "persistent://t/n/topic-partition-0", "pds-sub", "me"
	consumer := func(name string, permits, unacked int) utils.ConsumerStats {
		return utils.ConsumerStats{ConsumerName: name, AvailablePermits: permits, UnAckedMessages: unacked}
	}
	statsWith := func(backlog int64, consumers ...utils.ConsumerStats) utils.PartitionedTopicStats {
		return utils.PartitionedTopicStats{Partitions: map[string]utils.TopicStats{
			pt: {Subscriptions: map[string]utils.SubscriptionStats{sub: {MsgBacklog: backlog, Consumers: consumers}}},
		}}
	}
	cases := []struct {
		name  string
		stats utils.PartitionedTopicStats
		want  string
	}{
		{"attached, nothing to read", statsWith(0, consumer(me, 100, 0)), ""},
		{"not listed", statsWith(0, consumer("other", 100, 0)), "lost"},
		{"backlog nobody takes", statsWith(40, consumer(me, 100, 0), consumer("other", 50, 0)), "stuck"},
		{"backlog behind a consumer holding records", statsWith(40, consumer(me, 100, 0), consumer("other", 50, 3)), ""},
		{"backlog behind a consumer with no permits", statsWith(40, consumer(me, 100, 0), consumer("other", 0, 0)), ""},
		{"partition not in the stats yet", utils.PartitionedTopicStats{}, ""},
	}
	for _, tc := range cases {
		if got := partitionProblem(tc.stats, pt, sub, me); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
