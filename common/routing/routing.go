// Package routing validates published events, fills their routing defaults and decides where they go:
// which topic, which partition (by routing key) and which workflows. Every data-plane node runs the same
// code, so the same event is routed the same way wherever it is published.
package routing

import (
	"fmt"
	"time"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// Limits on one published event and on one Publish call. Every input over a limit is rejected with an
// InvalidArgument error naming the field; nothing is ever truncated.
const (
	// MaxEventsPerPublish is the largest number of events one Publish call may carry.
	MaxEventsPerPublish = 1000
	// MaxEventIDLength is the longest event_id, in characters.
	MaxEventIDLength = 100
	// MaxPortfolioIDLength is the longest data.portfolio_id, in characters.
	MaxPortfolioIDLength = 100
	// MaxTopicLength is the longest topic name, in characters (the portfolio_topics.topic_name column).
	MaxTopicLength = 200
	// MaxRoutingKeyLength is the longest routing key, in characters.
	MaxRoutingKeyLength = 256
	// MaxTargetWorkflows is the most entries routing.target_workflows may hold.
	MaxTargetWorkflows = 32
	// MaxWorkflowLength is the longest workflow name, in characters (portfolio_subscriptions.subscriber_workflow).
	MaxWorkflowLength = 100
	// MinPriority and MaxPriority bound routing.priority; 0 is the lowest.
	MinPriority = 0
	MaxPriority = 9
	// MaxEventBytes is the largest event, in bytes of its protobuf encoding after defaults are filled (1 MiB).
	MaxEventBytes = 1 << 20
)

// TimestampLayout is the one timestamp form PDS emits: RFC 3339 in UTC with milliseconds,
// e.g. "2025-06-21T10:00:00.000Z". Format it only from a time already in UTC.
const TimestampLayout = "2006-01-02T15:04:05.000Z"

// FormatTimestamp renders t in TimestampLayout, converting it to UTC first. It writes the digits itself, in
// a fifth of time.Format's time: Publish stamps every event that comes without a timestamp.
func FormatTimestamp(t time.Time) string {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.Format(TimestampLayout)
	}
	hour, minute, second := t.Clock()
	var b [len(TimestampLayout)]byte
	copy(b[:], TimestampLayout)
	putDigits(b[0:4], year)
	putDigits(b[5:7], int(month))
	putDigits(b[8:10], day)
	putDigits(b[11:13], hour)
	putDigits(b[14:16], minute)
	putDigits(b[17:19], second)
	putDigits(b[20:23], t.Nanosecond()/int(time.Millisecond)) // truncated, as time.Format does
	return string(b[:])
}

// putDigits writes v's last len(dst) decimal digits into dst, zero-padded.
func putDigits(dst []byte, v int) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// DefaultTopic returns the topic an event of data type t goes to when it names none, or "" for an
// unknown or unspecified type.
func DefaultTopic(t pdsv1.PortfolioDataType) string {
	switch t {
	case pdsv1.PortfolioDataType_PORTFOLIO_STATE:
		return "portfolio/state/updated"
	case pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION:
		return "portfolio/performance/attributed"
	case pdsv1.PortfolioDataType_REBALANCING:
		return "portfolio/rebalancing/proposed"
	case pdsv1.PortfolioDataType_RISK_BUDGET:
		return "portfolio/risk-budget/updated"
	case pdsv1.PortfolioDataType_CASH_MANAGEMENT:
		return "portfolio/cash/updated"
	default:
		return ""
	}
}

// RoutingKeyType returns the <type> segment of a default routing key "<portfolio_id>.<type>.update"
// (state, performance, rebalancing, risk_budget or cash), or "" for an unknown or unspecified type.
func RoutingKeyType(t pdsv1.PortfolioDataType) string {
	switch t {
	case pdsv1.PortfolioDataType_PORTFOLIO_STATE:
		return "state"
	case pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION:
		return "performance"
	case pdsv1.PortfolioDataType_REBALANCING:
		return "rebalancing"
	case pdsv1.PortfolioDataType_RISK_BUDGET:
		return "risk_budget"
	case pdsv1.PortfolioDataType_CASH_MANAGEMENT:
		return "cash"
	default:
		return ""
	}
}

// DefaultRoutingKey returns "<portfolio_id>.<type>.update", the routing key of an event that names none.
func DefaultRoutingKey(portfolioID string, t pdsv1.PortfolioDataType) string {
	return portfolioID + "." + RoutingKeyType(t) + ".update"
}

// CheckBatch validates the number of events in one Publish call: at least 1, at most MaxEventsPerPublish.
// The error is an apierr.FieldErrors on field "events".
func CheckBatch(n int) error {
	switch {
	case n < 1:
		return apierr.FieldErrors{apierr.Errorf("events", "at least 1 event is required (got 0); send the events to publish")}
	case n > MaxEventsPerPublish:
		return apierr.FieldErrors{apierr.Errorf("events",
			"at most %d events per publish (got %d); split the batch into several calls", MaxEventsPerPublish, n)}
	}
	return nil
}

// ToDistributed returns the portfolio_distributed event a subscriber receives for a normalized event.
// The result shares ev's data and target_workflows (no copy): neither may be modified afterwards.
func ToDistributed(ev *pdsv1.PortfolioDistribution) *pdsv1.PortfolioDistributed {
	r := ev.GetRouting()
	return &pdsv1.PortfolioDistributed{
		EventId:   ev.GetEventId(),
		Timestamp: ev.GetTimestamp(),
		Distribution: &pdsv1.DistributionInfo{
			Topic:           r.GetTopic(),
			RoutingKey:      r.GetRoutingKey(),
			TargetWorkflows: r.GetTargetWorkflows(),
		},
		Data: ev.GetData(),
	}
}

// TargetsWorkflow reports whether ev is meant for workflow: true when routing.target_workflows is empty
// (every workflow) or lists workflow exactly (case-sensitive).
func TargetsWorkflow(ev *pdsv1.PortfolioDistribution, workflow string) bool {
	targets := ev.GetRouting().GetTargetWorkflows()
	if len(targets) == 0 {
		return true
	}
	for _, t := range targets {
		if t == workflow {
			return true
		}
	}
	return false
}

// errNewEventID wraps a failure of the random source, which is not the client's fault.
func errNewEventID(err error) error {
	return fmt.Errorf("normalize event: generate event_id: %w", err)
}
