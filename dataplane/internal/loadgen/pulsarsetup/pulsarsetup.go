// Package pulsarsetup creates and removes what the Pulsar baselines of the load tool need (a tenant, a
// namespace, a partitioned topic and durable subscriptions, named from the run's RunID) and converts
// between load-tool events and the message properties PDS's Pulsar driver writes, so the baselines carry
// exactly the attributes PDS does and filter by them without decoding payloads.
package pulsarsetup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/rest"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Namespace is the namespace created inside each run's tenant.
const Namespace = "bench"

// adminTimeout bounds one admin call.
const adminTimeout = 30 * time.Second

// Names are the Pulsar names of one run.
type Names struct {
	// Tenant is "load-" followed by the RunID, reduced to characters Pulsar accepts.
	Tenant string
	// Namespace is Tenant/Namespace.
	Namespace string
	// Topic is the partitioned topic, persistent://tenant/namespace/topic.
	Topic string
	// Subscriptions holds the durable subscription of each SubscriptionSpec, in order.
	Subscriptions []string
}

// NamesOf derives a run's names from its topology. Subscription names keep the spec's index, so specs
// with equal names stay apart.
func NamesOf(t loadgen.Topology) Names {
	tenant := "load-" + token(t.RunID)
	ns := tenant + "/" + Namespace
	n := Names{Tenant: tenant, Namespace: ns, Topic: "persistent://" + ns + "/" + token(t.Topic)}
	for i, s := range t.Subscriptions {
		n.Subscriptions = append(n.Subscriptions, fmt.Sprintf("s%d-%s", i, token(s.Name)))
	}
	return n
}

// token keeps the characters Pulsar accepts in tenant, topic and subscription names and replaces others
// (such as the slashes of PDS topic names) with '-'.
func token(s string) string {
	if s == "" {
		return "x"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		default:
			return '-'
		}
	}, s)
}

// Admin prepares and removes runs through Pulsar's admin REST API.
type Admin struct {
	client pulsaradmin.Client
}

// NewAdmin returns an Admin for the web service at adminURL (e.g. http://127.0.0.1:8080).
func NewAdmin(adminURL string) (*Admin, error) {
	if adminURL == "" {
		return nil, errors.New("pulsar admin: URL is required")
	}
	c, err := pulsaradmin.NewClient(&pulsaradmin.Config{WebServiceURL: adminURL})
	if err != nil {
		return nil, fmt.Errorf("pulsar admin client for %s: %w", adminURL, err)
	}
	return &Admin{client: c}, nil
}

// Prepare creates the run's tenant (allowed on every cluster), namespace, partitioned topic and one
// durable subscription per spec positioned at the earliest message, so streams attached after the first
// publish still receive everything. It returns the names it created.
func (a *Admin) Prepare(ctx context.Context, t loadgen.Topology) (Names, error) {
	n := NamesOf(t)
	if t.Partitions < 1 {
		return n, fmt.Errorf("prepare %s: %d partitions (want at least 1)", n.Topic, t.Partitions)
	}
	call := func(what string, fn func(ctx context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, adminTimeout)
		defer cancel()
		if err := fn(cctx); err != nil {
			return fmt.Errorf("prepare: %s: %w", what, err)
		}
		return nil
	}
	var clusters []string
	if err := call("list clusters", func(ctx context.Context) (err error) {
		clusters, err = a.client.Clusters().ListWithContext(ctx)
		return err
	}); err != nil {
		return n, err
	}
	if err := call("create tenant "+n.Tenant, func(ctx context.Context) error {
		return a.client.Tenants().CreateWithContext(ctx, utils.TenantData{Name: n.Tenant, AllowedClusters: clusters})
	}); err != nil {
		return n, err
	}
	if err := call("create namespace "+n.Namespace, func(ctx context.Context) error {
		return a.client.Namespaces().CreateNamespaceWithContext(ctx, n.Namespace)
	}); err != nil {
		return n, err
	}
	topic, err := utils.GetTopicName(n.Topic)
	if err != nil {
		return n, fmt.Errorf("prepare: topic name %q: %w", n.Topic, err)
	}
	if err := call(fmt.Sprintf("create topic %s with %d partitions", n.Topic, t.Partitions), func(ctx context.Context) error {
		return a.client.Topics().CreateWithContext(ctx, *topic, t.Partitions)
	}); err != nil {
		return n, err
	}
	for _, sub := range n.Subscriptions {
		if err := call("create subscription "+sub, func(ctx context.Context) error {
			return a.client.Subscriptions().CreateWithContext(ctx, *topic, sub, utils.Earliest)
		}); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Cleanup force-deletes the run's topic (with its subscriptions and any consumers still attached), then
// its namespace and tenant. Parts already gone are not an error, so it also tidies a failed Prepare.
func (a *Admin) Cleanup(ctx context.Context, n Names) error {
	call := func(what string, fn func(ctx context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, adminTimeout)
		defer cancel()
		if err := fn(cctx); err != nil && !isStatus(err, http.StatusNotFound) {
			return fmt.Errorf("cleanup: %s: %w", what, err)
		}
		return nil
	}
	topic, err := utils.GetTopicName(n.Topic)
	if err != nil {
		return fmt.Errorf("cleanup: topic name %q: %w", n.Topic, err)
	}
	return errors.Join(
		call("delete topic "+n.Topic, func(ctx context.Context) error {
			return a.client.Topics().DeleteWithContext(ctx, *topic, true, false)
		}),
		call("delete namespace "+n.Namespace, func(ctx context.Context) error {
			return a.client.Namespaces().DeleteNamespaceWithContext(ctx, n.Namespace)
		}),
		call("delete tenant "+n.Tenant, func(ctx context.Context) error {
			return a.client.Tenants().DeleteWithContext(ctx, n.Tenant)
		}),
	)
}

// TenantExists reports whether Pulsar lists the tenant (tests use it to check Cleanup).
func (a *Admin) TenantExists(ctx context.Context, tenant string) (bool, error) {
	tenants, err := a.client.Tenants().ListWithContext(ctx)
	if err != nil {
		return false, fmt.Errorf("list tenants: %w", err)
	}
	return slices.Contains(tenants, tenant), nil
}

func isStatus(err error, code int) bool {
	var re rest.Error
	if errors.As(err, &re) {
		return re.Code == code
	}
	var rp *rest.Error
	return errors.As(err, &rp) && rp.Code == code
}
