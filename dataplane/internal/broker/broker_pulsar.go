package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
)

var (
	_ Broker      = (*PulsarBroker)(nil)
	_ LatestViews = (*PulsarBroker)(nil)
	_ Seeker      = (*PulsarBroker)(nil)
)

// Defaults of PulsarOptions; each applies when its field is zero.
const (
	DefaultPulsarTenantPrefix         = "pds-"
	DefaultPulsarNamespace            = "events"
	DefaultPulsarRetention            = 7 * 24 * time.Hour
	DefaultPulsarCompactionThreshold  = 1 << 20
	DefaultPulsarPartitionsDiscovery  = 5 * time.Second
	DefaultPulsarOperationTimeout     = 30 * time.Second
	DefaultPulsarNackRedeliveryDelay  = 100 * time.Millisecond
	DefaultPulsarBatchingMaxDelay     = time.Millisecond
	DefaultPulsarAdminRequestsTimeout = 30 * time.Second
)

// PulsarOptions configure OpenPulsar.
type PulsarOptions struct {
	// ServiceURL is the binary protocol endpoint, e.g. pulsar://127.0.0.1:6650 or pulsar+ssl://host:6651.
	// Required.
	ServiceURL string
	// AdminURL is the web service (admin REST) endpoint, e.g. http://127.0.0.1:8085. Required.
	AdminURL string
	// AuthToken authenticates both the client and the admin calls (JWT token auth). Empty means none.
	AuthToken string
	// TLSTrustCertsFile is a PEM file of the CAs trusted for pulsar+ssl:// and https://. Empty means the
	// system roots.
	TLSTrustCertsFile string
	// TLSAllowInsecureConnection accepts any server certificate. For development only.
	TLSAllowInsecureConnection bool
	// TenantPrefix prefixes the Pulsar tenant of each PDS tenant (TenantPrefix + tenant ID). Empty means
	// DefaultPulsarTenantPrefix ("pds-").
	TenantPrefix string
	// Namespace is the namespace inside each tenant holding its topics. Empty means "events".
	Namespace string
	// Logger receives the driver's and the client's warnings and errors. Nil discards them.
	Logger *slog.Logger
	// Retention keeps records, acknowledged or not, for this long, so a subscription created later still
	// finds them. Zero means DefaultPulsarRetention (7 days). Set on each namespace the driver creates.
	Retention time.Duration
	// CompactionThreshold is the backlog in bytes above which Pulsar compacts the latest-view topics.
	// Zero means DefaultPulsarCompactionThreshold (1 MiB).
	CompactionThreshold int64
	// PartitionsDiscovery is how often producers and consumers look for partitions added by another node.
	// Zero means DefaultPulsarPartitionsDiscovery (5s).
	PartitionsDiscovery time.Duration
	// OperationTimeout bounds client operations such as creating producers and consumers. Zero means 30s.
	OperationTimeout time.Duration
	// NackRedeliveryDelay is how soon a nacked record, or one past its ack deadline, is delivered again.
	// Zero means DefaultPulsarNackRedeliveryDelay (100ms).
	NackRedeliveryDelay time.Duration
	// BatchingMaxDelay is how long a producer waits to fill a batch. Zero means 1ms.
	BatchingMaxDelay time.Duration
}

func (o *PulsarOptions) withDefaults() PulsarOptions {
	out := *o
	if out.TenantPrefix == "" {
		out.TenantPrefix = DefaultPulsarTenantPrefix
	}
	if out.Namespace == "" {
		out.Namespace = DefaultPulsarNamespace
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.Retention <= 0 {
		out.Retention = DefaultPulsarRetention
	}
	if out.CompactionThreshold <= 0 {
		out.CompactionThreshold = DefaultPulsarCompactionThreshold
	}
	if out.PartitionsDiscovery <= 0 {
		out.PartitionsDiscovery = DefaultPulsarPartitionsDiscovery
	}
	if out.OperationTimeout <= 0 {
		out.OperationTimeout = DefaultPulsarOperationTimeout
	}
	if out.NackRedeliveryDelay <= 0 {
		out.NackRedeliveryDelay = DefaultPulsarNackRedeliveryDelay
	}
	if out.BatchingMaxDelay <= 0 {
		out.BatchingMaxDelay = DefaultPulsarBatchingMaxDelay
	}
	return out
}

// PulsarBroker is the production driver: a PDS tenant is a Pulsar tenant (TenantPrefix + tenant ID) with
// one namespace; a PDS topic is a partitioned persistent topic named by its ID; a PDS subscription is one
// durable Key_Shared subscription, so consumers on several nodes share it and keep order per key.
type PulsarBroker struct {
	opts   PulsarOptions
	log    *slog.Logger
	client pulsar.Client
	admin  pulsaradmin.Client

	closed    chan struct{}
	closeOnce sync.Once
	// closing tracks consumers finishing their Close in the background.
	closing sync.WaitGroup
	// released remembers the attempts of records released by closed consumers (see releasedAttempts).
	released releasedAttempts
	// topicStats reads topics' stats for the consumers' attach checks.
	topicStats *topicStatsReads

	mu         sync.Mutex
	namespaces map[string]bool // ensured namespaces, by tenant/namespace
	producers  map[string]*pulsarProducer
	consumers  map[*pulsarConsumer]struct{}
	views      map[string]*pulsarView // by latest-view topic
	clusters   []string
}

// OpenPulsar connects to a Pulsar cluster. It checks that the admin API answers and that the broker
// accepts a connection over the binary protocol, so a wrong URL, token or CA fails here, saying which
// option to check, rather than on the first topic or stream.
func OpenPulsar(ctx context.Context, opts PulsarOptions) (*PulsarBroker, error) {
	if opts.ServiceURL == "" {
		return nil, errors.New("open pulsar broker: ServiceURL is required")
	}
	if opts.AdminURL == "" {
		return nil, errors.New("open pulsar broker: AdminURL is required")
	}
	o := opts.withDefaults()
	if _, err := trustedCAs(o.TLSTrustCertsFile); err != nil {
		return nil, fmt.Errorf("open pulsar broker: %w", err)
	}
	client, err := pulsar.NewClient(pulsarClientOptions(o, o.Logger.With("component", "pulsar-client")))
	if err != nil {
		return nil, fmt.Errorf("open pulsar broker: client for %s: %w", o.ServiceURL, err)
	}
	admin, err := pulsaradmin.NewClient(&pulsaradmin.Config{
		WebServiceURL:              o.AdminURL,
		Token:                      o.AuthToken,
		TLSTrustCertsFilePath:      o.TLSTrustCertsFile,
		TLSAllowInsecureConnection: o.TLSAllowInsecureConnection,
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open pulsar broker: admin client for %s: %w", o.AdminURL, err)
	}
	b := &PulsarBroker{
		opts:       o,
		log:        o.Logger,
		client:     client,
		admin:      admin,
		closed:     make(chan struct{}),
		namespaces: map[string]bool{},
		producers:  map[string]*pulsarProducer{},
		consumers:  map[*pulsarConsumer]struct{}{},
		views:      map[string]*pulsarView{},
	}
	b.topicStats = newTopicStatsReads(func(ctx context.Context, topic string) (utils.PartitionedTopicStats, error) {
		return admin.Topics().GetPartitionedStatsWithContext(ctx, mustTopicName(topic), true)
	})
	err = b.retryAdmin(ctx, "list clusters", func(ctx context.Context) error {
		clusters, err := admin.Clusters().ListWithContext(ctx)
		b.clusters = clusters
		return err
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open pulsar broker: admin API at %s: %w", o.AdminURL, err)
	}
	if len(b.clusters) == 0 {
		client.Close()
		return nil, fmt.Errorf("open pulsar broker: admin API at %s lists no clusters", o.AdminURL)
	}
	// Creating tenants, which the driver does for every PDS tenant, takes a superuser, as listing them
	// does: a role without that right fails here rather than on the first topic.
	err = b.retryAdmin(ctx, "list tenants", func(ctx context.Context) error {
		_, err := admin.Tenants().ListWithContext(ctx)
		return err
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open pulsar broker: admin API at %s: %w", o.AdminURL, err)
	}
	if err := checkBinaryProtocol(ctx, o); err != nil {
		client.Close()
		return nil, fmt.Errorf("open pulsar broker: %w", err)
	}
	return b, nil
}

func (b *PulsarBroker) isClosed() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// Close closes consumers (their unacknowledged records go to other consumers), producers, latest views
// and the client. Publish calls still waiting fail with ErrClosed.
func (b *PulsarBroker) Close() error {
	b.closeOnce.Do(func() {
		close(b.closed)
		b.mu.Lock()
		consumers := make([]*pulsarConsumer, 0, len(b.consumers))
		for c := range b.consumers {
			consumers = append(consumers, c)
		}
		producers := b.producers
		views := b.views
		b.producers = map[string]*pulsarProducer{}
		b.views = map[string]*pulsarView{}
		b.mu.Unlock()
		for _, c := range consumers {
			_ = c.Close()
		}
		b.closing.Wait()
		for _, p := range producers {
			p.close()
		}
		for _, v := range views {
			v.close()
		}
		b.client.Close()
	})
	return nil
}

// startClosing registers a consumer closing in the background, unless the broker is closing: then the
// caller closes at once. Under mu, so that Close, which takes mu after marking itself closed, waits for
// every registered one.
func (b *PulsarBroker) startClosing() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isClosed() {
		return false
	}
	b.closing.Add(1)
	return true
}

// pulsarNames are the Pulsar names of one PDS topic.
type pulsarNames struct {
	tenant    string
	namespace string // tenant/namespace
	topic     string // persistent://tenant/namespace/topic
}

func (b *PulsarBroker) namesOf(tenantID, local string) pulsarNames {
	tenant := b.opts.TenantPrefix + engineToken(tenantID)
	ns := tenant + "/" + b.opts.Namespace
	return pulsarNames{tenant: tenant, namespace: ns, topic: "persistent://" + ns + "/" + local}
}

func (b *PulsarBroker) topicNames(ref TopicRef) pulsarNames {
	return b.namesOf(ref.TenantID, engineToken(ref.ID))
}

func subscriptionName(sub SubscriptionRef) string { return "pds-" + engineToken(sub.ID) }

func mustTopicName(full string) utils.TopicName {
	tn, err := utils.GetTopicName(full)
	if err != nil {
		// Names are built from engineToken output, which Pulsar always accepts.
		panic(fmt.Sprintf("invalid pulsar topic name %q: %v", full, err))
	}
	return *tn
}

// ensureNamespace creates the tenant and its namespace if missing and sets the namespace's policies:
// retention (records stay for subscriptions created later), a low compaction threshold (latest views)
// and no automatic topic creation, so a client reconnecting to a deleted topic cannot bring it back as a
// non-partitioned one.
func (b *PulsarBroker) ensureNamespace(ctx context.Context, names pulsarNames) error {
	b.mu.Lock()
	done := b.namespaces[names.namespace]
	b.mu.Unlock()
	if done {
		return nil
	}
	err := b.retryAdmin(ctx, "create tenant "+names.tenant, func(ctx context.Context) error {
		err := b.admin.Tenants().CreateWithContext(ctx, utils.TenantData{Name: names.tenant, AllowedClusters: b.clusters})
		if isAdminStatus(err, http.StatusConflict) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	err = b.retryAdmin(ctx, "create namespace "+names.namespace, func(ctx context.Context) error {
		err := b.admin.Namespaces().CreateNamespaceWithContext(ctx, names.namespace)
		if isAdminStatus(err, http.StatusConflict) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	nsName, err := utils.GetNamespaceName(names.namespace)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", names.namespace, err)
	}
	retention := utils.RetentionPolicies{RetentionTimeInMinutes: int(b.opts.Retention / time.Minute), RetentionSizeInMB: -1}
	steps := []struct {
		what string
		do   func(ctx context.Context) error
	}{
		{"set retention", func(ctx context.Context) error {
			return b.admin.Namespaces().SetRetentionWithContext(ctx, names.namespace, retention)
		}},
		{"set compaction threshold", func(ctx context.Context) error {
			return b.admin.Namespaces().SetCompactionThresholdWithContext(ctx, *nsName, b.opts.CompactionThreshold)
		}},
		{"disable automatic topic creation", func(ctx context.Context) error {
			return b.admin.Namespaces().SetTopicAutoCreationWithContext(ctx, *nsName, utils.TopicAutoCreationConfig{Allow: false, Type: utils.NonPartitioned})
		}},
	}
	for _, s := range steps {
		if err := b.retryAdmin(ctx, s.what+" of "+names.namespace, s.do); err != nil {
			return err
		}
	}
	b.mu.Lock()
	b.namespaces[names.namespace] = true
	b.mu.Unlock()
	return nil
}

// EnsureTopic creates the partitioned topic or grows its partitions; it never shrinks a topic.
func (b *PulsarBroker) EnsureTopic(ctx context.Context, ref TopicRef) error {
	if b.isClosed() {
		return ErrClosed
	}
	names := b.topicNames(ref)
	want := max(ref.Partitions, 1)
	if err := b.ensureNamespace(ctx, names); err != nil {
		return fmt.Errorf("ensure topic %s: %w", ref.ID, err)
	}
	topic := mustTopicName(names.topic)
	var grown bool
	err := b.retryAdmin(ctx, "ensure topic "+names.topic, func(ctx context.Context) error {
		meta, err := b.admin.Topics().GetMetadataWithContext(ctx, topic)
		if err != nil && !isAdminStatus(err, http.StatusNotFound) {
			return err
		}
		switch {
		case err != nil || meta.Partitions == 0:
			err = b.admin.Topics().CreateWithContext(ctx, topic, want)
			if isAdminStatus(err, http.StatusConflict) {
				return errConcurrentChange // created concurrently: look again
			}
			return err
		case meta.Partitions < want:
			grown = true
			err := b.admin.Topics().UpdateWithContext(ctx, topic, want)
			if err != nil && !isTransientAdminError(err) {
				// Another node may have grown it meanwhile (Pulsar refuses an update to the current count).
				if now, metaErr := b.admin.Topics().GetMetadataWithContext(ctx, topic); metaErr == nil && now.Partitions >= want {
					return nil
				}
				if isAdminStatus(err, http.StatusConflict) {
					return errConcurrentChange // that update is still under way
				}
			}
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ensure topic %s (%d partitions): %w", ref.ID, want, err)
	}
	if grown {
		// The cached producer routes over the old partition count until it rediscovers partitions:
		// replace it now so records for the new partitions go where PDS routed them.
		b.dropProducer(names.topic)
	}
	return nil
}

// DeleteTopic closes this process's producers and consumers of the topic, then force-deletes it with its
// subscriptions.
func (b *PulsarBroker) DeleteTopic(ctx context.Context, ref TopicRef) error {
	if b.isClosed() {
		return ErrClosed
	}
	names := b.topicNames(ref)
	b.dropProducer(names.topic)
	b.closeConsumers(func(c *pulsarConsumer) bool { return c.topic == names.topic })
	topic := mustTopicName(names.topic)
	err := b.retryAdmin(ctx, "delete topic "+names.topic, func(ctx context.Context) error {
		err := b.admin.Topics().DeleteWithContext(ctx, topic, true, false)
		if isAdminStatus(err, http.StatusNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete topic %s: %w", ref.ID, err)
	}
	return nil
}

func (b *PulsarBroker) closeConsumers(match func(*pulsarConsumer) bool) {
	b.mu.Lock()
	var matched []*pulsarConsumer
	for c := range b.consumers {
		if match(c) {
			matched = append(matched, c)
		}
	}
	b.mu.Unlock()
	for _, c := range matched {
		c.closeGone()
	}
}

// errConcurrentChange asks retryAdmin for another attempt (after the usual backoff): the state changed
// concurrently, e.g. another node created or grew the topic.
var errConcurrentChange = errors.New("state changed concurrently, retry")

// Admin retry schedule: transient failures (network, 5xx, 429) are retried with exponential backoff
// while ctx lasts, at most adminMaxAttempts times.
const (
	adminMaxAttempts  = 10
	adminFirstBackoff = 100 * time.Millisecond
	adminMaxBackoff   = 3 * time.Second
)

// retryAdmin runs fn until it succeeds, fails permanently (a 4xx answer) or runs out of attempts or ctx.
func (b *PulsarBroker) retryAdmin(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	backoff := adminFirstBackoff
	var err error
	for attempt := 1; ; attempt++ {
		if b.isClosed() {
			return ErrClosed
		}
		callCtx, cancel := context.WithTimeout(ctx, DefaultPulsarAdminRequestsTimeout)
		err = fn(callCtx)
		cancel()
		if err == nil {
			return nil
		}
		if !isTransientAdminError(err) || attempt >= adminMaxAttempts {
			return fmt.Errorf("%s: %w", op, explainAdminError(err, b.opts.AuthToken != ""))
		}
		if !errors.Is(err, errConcurrentChange) {
			b.log.Warn("pulsar admin call failed, retrying", "op", op, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %v)", op, ctx.Err(), err)
		case <-b.closed:
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
		backoff = min(2*backoff, adminMaxBackoff)
	}
}

func isAdminStatus(err error, code int) bool {
	got, _ := adminErrorStatus(err)
	return got == code
}

func isTransientAdminError(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrClosed) || isCertificateError(err) {
		return false
	}
	code, _ := adminErrorStatus(err)
	if code == 0 {
		return true // no HTTP answer: network or timeout
	}
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// KeepsProperties marks the driver as storing Record.Properties (as Pulsar message properties).
func (b *PulsarBroker) KeepsProperties() {}
