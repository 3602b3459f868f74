package configfsm

import (
	"sort"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// Matcher decides whether an event passes a subscription's filters. Implementations must be safe for
// concurrent use and must not change once built.
type Matcher interface {
	Match(event *pdsv1.PortfolioDistribution) bool
}

// FilterCompiler turns a subscription's filters into a Matcher. It must be deterministic: every node
// compiles the same filters to the same behaviour.
type FilterCompiler func(filters *pdsv1.SubscriptionFilters) (Matcher, error)

// Subscription is a replicated subscription with its compiled filters.
type Subscription struct {
	Proto *pdsv1.Subscription
	// Matcher is nil when no FilterCompiler was given. When the filters failed to compile (which the control
	// plane's validation prevents), CompileErr is set and the subscription matches nothing.
	Matcher    Matcher
	CompileErr error
}

// Config is one immutable version of the replicated configuration. Readers may keep and use it without
// locks; each applied command produces a new Config.
type Config struct {
	// Version is the raft index of the last entry applied; 0 before any.
	Version uint64
	// LastOutboxID is the id of the last control-plane outbox row applied.
	LastOutboxID uint64

	topics        map[tenantKey]*pdsv1.Topic
	subscriptions map[tenantKey]*Subscription
	byTopic       map[tenantKey][]*Subscription
}

type tenantKey struct{ tenant, name string }

func emptyConfig() *Config {
	return &Config{
		topics:        map[tenantKey]*pdsv1.Topic{},
		subscriptions: map[tenantKey]*Subscription{},
		byTopic:       map[tenantKey][]*Subscription{},
	}
}

// Topic returns the tenant's topic by name.
func (c *Config) Topic(tenantID, topicName string) (*pdsv1.Topic, bool) {
	t, ok := c.topics[tenantKey{tenantID, topicName}]
	return t, ok
}

// Topics returns every topic of every tenant, ordered by tenant then name.
func (c *Config) Topics() []*pdsv1.Topic {
	out := make([]*pdsv1.Topic, 0, len(c.topics))
	for _, t := range c.topics {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetTenantId() != out[j].GetTenantId() {
			return out[i].GetTenantId() < out[j].GetTenantId()
		}
		return out[i].GetTopicName() < out[j].GetTopicName()
	})
	return out
}

// Subscription returns the tenant's subscription by its subscription_id.
func (c *Config) Subscription(tenantID, subscriptionID string) (*Subscription, bool) {
	s, ok := c.subscriptions[tenantKey{tenantID, subscriptionID}]
	return s, ok
}

// Subscriptions returns every subscription of every tenant, ordered by tenant then subscription_id.
func (c *Config) Subscriptions() []*Subscription {
	out := make([]*Subscription, 0, len(c.subscriptions))
	for _, s := range c.subscriptions {
		out = append(out, s)
	}
	sortSubscriptions(out)
	return out
}

// SubscriptionsOfTopic returns the subscriptions reading a topic, ordered by subscription_id. The slice is
// shared: do not modify it.
func (c *Config) SubscriptionsOfTopic(tenantID, topicName string) []*Subscription {
	return c.byTopic[tenantKey{tenantID, topicName}]
}

func sortSubscriptions(subs []*Subscription) {
	sort.Slice(subs, func(i, j int) bool {
		a, b := subs[i].Proto, subs[j].Proto
		if a.GetTenantId() != b.GetTenantId() {
			return a.GetTenantId() < b.GetTenantId()
		}
		return a.GetSubscriptionId() < b.GetSubscriptionId()
	})
}

// clone copies the maps (not the immutable values) so a command can change the copy.
func (c *Config) clone() *Config {
	n := &Config{
		Version:       c.Version,
		LastOutboxID:  c.LastOutboxID,
		topics:        make(map[tenantKey]*pdsv1.Topic, len(c.topics)+1),
		subscriptions: make(map[tenantKey]*Subscription, len(c.subscriptions)+1),
		byTopic:       make(map[tenantKey][]*Subscription, len(c.byTopic)+1),
	}
	for k, v := range c.topics {
		n.topics[k] = v
	}
	for k, v := range c.subscriptions {
		n.subscriptions[k] = v
	}
	for k, v := range c.byTopic {
		n.byTopic[k] = v
	}
	return n
}

func (c *Config) putTopic(t *pdsv1.Topic) {
	c.topics[tenantKey{t.GetTenantId(), t.GetTopicName()}] = t
}

func (c *Config) deleteTopic(tenantID, name string) {
	delete(c.topics, tenantKey{tenantID, name})
}

func (c *Config) putSubscription(s *Subscription) {
	key := tenantKey{s.Proto.GetTenantId(), s.Proto.GetSubscriptionId()}
	if old, ok := c.subscriptions[key]; ok {
		c.removeFromTopic(old)
	}
	c.subscriptions[key] = s
	topicKey := tenantKey{s.Proto.GetTenantId(), s.Proto.GetTopicName()}
	list := append(append([]*Subscription(nil), c.byTopic[topicKey]...), s)
	sortSubscriptions(list)
	c.byTopic[topicKey] = list
}

func (c *Config) deleteSubscription(tenantID, subscriptionID string) {
	key := tenantKey{tenantID, subscriptionID}
	if old, ok := c.subscriptions[key]; ok {
		c.removeFromTopic(old)
		delete(c.subscriptions, key)
	}
}

func (c *Config) removeFromTopic(s *Subscription) {
	topicKey := tenantKey{s.Proto.GetTenantId(), s.Proto.GetTopicName()}
	var kept []*Subscription
	for _, other := range c.byTopic[topicKey] {
		if other != s {
			kept = append(kept, other)
		}
	}
	if len(kept) == 0 {
		delete(c.byTopic, topicKey)
		return
	}
	c.byTopic[topicKey] = kept
}
