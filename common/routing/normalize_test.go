package routing_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

var publishTime = time.Date(2025, 6, 21, 10, 0, 0, 123_456_789, time.UTC)

// validEvent is the specification's example event as a producer publishes it, with every default left empty.
func validEvent() *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId: "portfolio_001",
			TotalValue:  1000000.00,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{
				DailyReturn: 0.012,
				YtdReturn:   0.085,
			},
		},
		Routing: &pdsv1.RoutingInfo{TargetWorkflows: []string{"reporting_analytics", "user_interface"}},
	}
}

func rebalancingEvent() *pdsv1.PortfolioDistribution {
	ev := validEvent()
	ev.DataType = pdsv1.PortfolioDataType_REBALANCING
	ev.Data.Details = &pdsv1.PortfolioData_Rebalancing{Rebalancing: &pdsv1.RebalancingDetails{
		RebalanceId: "rb-1",
		Trades: []*pdsv1.Trade{
			{InstrumentId: "AAPL", Side: "BUY", Quantity: 10, TargetWeight: 0.1},
			{InstrumentId: "MSFT", Side: "SELL", Quantity: 5, TargetWeight: 0.05},
		},
	}}
	return ev
}

// fieldsOf returns the field paths of a Normalize error, failing the test if it is not a FieldErrors.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs apierr.FieldErrors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v (%T) is not an apierr.FieldErrors", err, err)
	}
	fields := make([]string, len(errs))
	for i, e := range errs {
		fields[i] = e.Field
	}
	return fields
}

func TestNormalizeLimits(t *testing.T) {
	t.Parallel()
	workflows := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "wf" + strings.Repeat("x", i%3)
		}
		return out
	}
	tests := []struct {
		name      string
		mutate    func(ev *pdsv1.PortfolioDistribution)
		wantField string // "" means the event is valid
		wantText  string // a fragment the error description must contain
	}{
		{name: "event_id at 100 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.EventId = strings.Repeat("e", 100) }},
		{name: "event_id at 101 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.EventId = strings.Repeat("e", 101) },
			wantField: "event_id", wantText: "at most 100 characters (got 101)"},
		{name: "event_id with every allowed character", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.EventId = "Ab9-_.:" }},
		{name: "event_id with a space", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.EventId = "evt 1" },
			wantField: "event_id", wantText: "may contain only"},
		{name: "timestamp with offset", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Timestamp = "2025-06-21T12:00:00+02:00" }},
		{name: "timestamp not RFC 3339", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Timestamp = "2025-06-21 10:00:00" },
			wantField: "timestamp", wantText: "RFC 3339"},
		{name: "timestamp past year 9999 in UTC", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Timestamp = "9999-12-31T23:00:00-02:00" },
			wantField: "timestamp", wantText: "RFC 3339"},
		{name: "timestamp garbage", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Timestamp = "yesterday" },
			wantField: "timestamp", wantText: `"yesterday"`},
		{name: "data_type unspecified", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.DataType = 0 },
			wantField: "data_type", wantText: "is required"},
		{name: "data_type unknown number", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.DataType = 99 },
			wantField: "data_type", wantText: "got 99"},
		{name: "data missing", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data = nil },
			wantField: "data", wantText: "is required"},
		{name: "portfolio_id missing", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.PortfolioId = "" },
			wantField: "data.portfolio_id", wantText: "is required"},
		{name: "portfolio_id at 100 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.PortfolioId = strings.Repeat("p", 100) }},
		{name: "portfolio_id at 101 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.PortfolioId = strings.Repeat("p", 101) },
			wantField: "data.portfolio_id", wantText: "at most 100 characters (got 101)"},
		{name: "portfolio_id with a slash", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.PortfolioId = "p/1" },
			wantField: "data.portfolio_id", wantText: "'/'"},
		{name: "total_value NaN", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.TotalValue = math.NaN() },
			wantField: "data.total_value", wantText: "finite"},
		{name: "total_value +Inf", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.TotalValue = math.Inf(1) },
			wantField: "data.total_value", wantText: "finite"},
		{name: "total_value -Inf", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.TotalValue = math.Inf(-1) },
			wantField: "data.total_value", wantText: "finite"},
		{name: "total_value negative is allowed", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.TotalValue = -5 }},
		{name: "daily_return NaN", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.PerformanceMetrics.DailyReturn = math.NaN() },
			wantField: "data.performance_metrics.daily_return", wantText: "finite"},
		{name: "details matching data_type", mutate: func(ev *pdsv1.PortfolioDistribution) {
			ev.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{Currency: "USD"}}
		}},
		{name: "rebalancing details on a PORTFOLIO_STATE event", mutate: func(ev *pdsv1.PortfolioDistribution) {
			ev.Data.Details = rebalancingEvent().Data.Details
		}, wantField: "data.rebalancing", wantText: "does not match data_type PORTFOLIO_STATE"},
		{name: "NaN inside details", mutate: func(ev *pdsv1.PortfolioDistribution) {
			r := rebalancingEvent()
			r.Data.GetRebalancing().Trades[1].Quantity = math.NaN()
			ev.DataType, ev.Data = r.DataType, r.Data
		}, wantField: "data.rebalancing.trades[1].quantity", wantText: "finite"},
		{name: "topic at 200 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Topic = strings.Repeat("t", 200) }},
		{name: "topic at 201 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Topic = strings.Repeat("t", 201) },
			wantField: "routing.topic", wantText: "at most 200 characters (got 201); shorten the topic name"},
		{name: "topic with every allowed character", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Topic = "aZ9/._-" }},
		{name: "topic with a colon", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Topic = "portfolio:state" },
			wantField: "routing.topic", wantText: "may contain only"},
		{name: "routing_key at 256 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = strings.Repeat("k", 256) }},
		{name: "routing_key at 257 characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = strings.Repeat("k", 257) },
			wantField: "routing.routing_key", wantText: "at most 256 characters (got 257)"},
		{name: "routing_key with non-ASCII printable characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = "portefeuille_é.state:update#1" }},
		{name: "routing_key with a space", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = "a b" },
			wantField: "routing.routing_key", wantText: "without spaces"},
		{name: "routing_key with a tab", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = "a\tb" },
			wantField: "routing.routing_key", wantText: "without spaces"},
		{name: "32 target workflows", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.TargetWorkflows = workflows(32) }},
		{name: "33 target workflows", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.TargetWorkflows = workflows(33) },
			wantField: "routing.target_workflows", wantText: "at most 32 workflows (got 33)"},
		{name: "target workflow at 100 characters", mutate: func(ev *pdsv1.PortfolioDistribution) {
			ev.Routing.TargetWorkflows = []string{strings.Repeat("w", 100)}
		}},
		{name: "target workflow at 101 characters", mutate: func(ev *pdsv1.PortfolioDistribution) {
			ev.Routing.TargetWorkflows = []string{"ok", strings.Repeat("w", 101)}
		}, wantField: "routing.target_workflows[1]", wantText: "at most 100 characters (got 101)"},
		// Lengths count characters, not bytes: 100 two-byte characters are within the limit.
		{name: "target workflow at 100 non-ASCII characters", mutate: func(ev *pdsv1.PortfolioDistribution) {
			ev.Routing.TargetWorkflows = []string{strings.Repeat("é", 100)}
		}},
		{name: "target workflow with spaces and non-ASCII letters", mutate: func(ev *pdsv1.PortfolioDistribution) {
			ev.Routing.TargetWorkflows = []string{"équipe risque"}
		}},
		{name: "target workflow of spaces", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.TargetWorkflows = []string{"  "} },
			wantField: "routing.target_workflows[0]", wantText: "must not be empty"},
		{name: "target workflow with a control character", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.TargetWorkflows = []string{"risk\x07"} },
			wantField: "routing.target_workflows[0]", wantText: "control characters"},
		{name: "routing_key at 256 non-ASCII characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = strings.Repeat("é", 256) }},
		{name: "routing_key at 257 non-ASCII characters", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = strings.Repeat("é", 257) },
			wantField: "routing.routing_key", wantText: "at most 256 characters (got 257)"},
		{name: "empty target workflow", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.TargetWorkflows = []string{""} },
			wantField: "routing.target_workflows[0]", wantText: "must not be empty"},
		// Events decoded by UnmarshalVT reach Normalize without protobuf's UTF-8 check.
		{name: "target workflow not UTF-8", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.TargetWorkflows = []string{"ok", "risk\xff"} },
			wantField: "routing.target_workflows[1]", wantText: "must be valid UTF-8"},
		{name: "routing key not UTF-8", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.RoutingKey = "key\xc3" },
			wantField: "routing.routing_key", wantText: "must be valid UTF-8"},
		{name: "portfolio id not UTF-8", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Data.PortfolioId = "p\xff" },
			wantField: "data.portfolio_id", wantText: "may contain only"},
		{name: "topic not UTF-8", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Topic = "a/\xff" },
			wantField: "routing.topic", wantText: "may contain only"},
		{name: "event id not UTF-8", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.EventId = "e\xff" },
			wantField: "event_id", wantText: "may contain only"},
		{name: "timestamp not UTF-8", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Timestamp = "2025-06-21T10:00:00\xff" },
			wantField: "timestamp", wantText: "RFC 3339"},
		{name: "priority 0", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Priority = 0 }},
		{name: "priority 9", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Priority = 9 }},
		{name: "priority 10", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Priority = 10 },
			wantField: "routing.priority", wantText: "from 0 (lowest) to 9 (highest) (got 10)"},
		{name: "priority -1", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing.Priority = -1 },
			wantField: "routing.priority", wantText: "got -1"},
		{name: "routing missing", mutate: func(ev *pdsv1.PortfolioDistribution) { ev.Routing = nil }},
	}
	for _, tt := range tests {
		for _, form := range detailsForms {
			t.Run(tt.name+"/"+form.name, func(t *testing.T) {
				t.Parallel()
				ev := validEvent()
				tt.mutate(ev)
				err := routing.Normalize(form.make(t, ev), "", publishTime)
				fields := fieldsOf(t, err)
				if tt.wantField == "" {
					if err != nil {
						t.Fatalf("Normalize rejected a valid event: %v", err)
					}
					return
				}
				if len(fields) != 1 || fields[0] != tt.wantField {
					t.Fatalf("Normalize error fields = %q, want exactly [%q] (error: %v)", fields, tt.wantField, err)
				}
				if !strings.Contains(err.Error(), tt.wantText) {
					t.Errorf("Normalize error %q does not say %q", err.Error(), tt.wantText)
				}
			})
		}
	}
}

func TestNormalizeEncodedSizeLimit(t *testing.T) {
	t.Parallel()
	// sized returns a normalized rebalancing event whose encoding is exactly size bytes.
	sized := func(t *testing.T, size int) *pdsv1.PortfolioDistribution {
		t.Helper()
		ev := rebalancingEvent()
		if err := routing.Normalize(ev, "", publishTime); err != nil {
			t.Fatalf("normalize base event: %v", err)
		}
		details := ev.Data.GetRebalancing()
		for range 5 {
			gap := size - proto.Size(ev)
			if gap == 0 {
				return ev
			}
			details.Reason = strings.Repeat("r", len(details.Reason)+gap)
		}
		t.Fatalf("could not size the event to %d bytes (got %d)", size, proto.Size(ev))
		return nil
	}
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{name: "exactly 1 MiB", size: routing.MaxEventBytes},
		{name: "1 MiB plus one byte", size: routing.MaxEventBytes + 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := sized(t, tt.size)
			err := routing.Normalize(ev, "events[7]", publishTime)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Normalize rejected a %d-byte event: %v", tt.size, err)
				}
				return
			}
			fields := fieldsOf(t, err)
			if len(fields) != 1 || fields[0] != "events[7]" {
				t.Fatalf("error fields = %q, want [\"events[7]\"] (error: %v)", fields, err)
			}
			if !strings.Contains(err.Error(), "at most 1048576 bytes (1 MiB) (got 1048577)") {
				t.Errorf("error %q does not state the limit and the size", err)
			}
		})
	}
}

func TestNormalizeReportsEveryProblemWithThePrefix(t *testing.T) {
	t.Parallel()
	ev := validEvent()
	ev.EventId = strings.Repeat("e", 101)
	ev.Data.TotalValue = math.NaN()
	ev.Routing.Topic = strings.Repeat("t", 245)
	ev.Routing.Priority = 12
	before := proto.Clone(ev)

	err := routing.Normalize(ev, "events[2]", publishTime)

	want := []string{"events[2].event_id", "events[2].data.total_value", "events[2].routing.topic", "events[2].routing.priority"}
	got := fieldsOf(t, err)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("error fields = %q, want %q", got, want)
	}
	if !strings.Contains(err.Error(), "events[2].routing.topic: at most 200 characters (got 245); shorten the topic name") {
		t.Errorf("error %q lacks the topic message in the documented form", err)
	}
	if !proto.Equal(before, ev) {
		t.Errorf("Normalize changed an invalid event:\nbefore %v\nafter  %v", before, ev)
	}
}

func TestNormalizeNilEvent(t *testing.T) {
	t.Parallel()
	got := fieldsOf(t, routing.Normalize(nil, "events[0]", publishTime))
	if len(got) != 1 || got[0] != "events[0]" {
		t.Fatalf("Normalize(nil) fields = %q, want [\"events[0]\"]", got)
	}
}

func TestNormalizeFillsDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dataType  pdsv1.PortfolioDataType
		wantTopic string
		wantKey   string
	}{
		{pdsv1.PortfolioDataType_PORTFOLIO_STATE, "portfolio/state/updated", "portfolio_001.state.update"},
		{pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION, "portfolio/performance/attributed", "portfolio_001.performance.update"},
		{pdsv1.PortfolioDataType_REBALANCING, "portfolio/rebalancing/proposed", "portfolio_001.rebalancing.update"},
		{pdsv1.PortfolioDataType_RISK_BUDGET, "portfolio/risk-budget/updated", "portfolio_001.risk_budget.update"},
		{pdsv1.PortfolioDataType_CASH_MANAGEMENT, "portfolio/cash/updated", "portfolio_001.cash.update"},
	}
	for _, tt := range tests {
		t.Run(tt.dataType.String(), func(t *testing.T) {
			t.Parallel()
			ev := validEvent()
			ev.DataType = tt.dataType
			ev.Routing = nil
			if err := routing.Normalize(ev, "", publishTime); err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			id, err := uuid.Parse(ev.EventId)
			if err != nil || id.Version() != 7 {
				t.Errorf("event_id %q is not a UUIDv7 (parse error %v)", ev.EventId, err)
			}
			if ev.Timestamp != "2025-06-21T10:00:00.123Z" {
				t.Errorf("timestamp = %q, want the publish time in UTC with milliseconds %q", ev.Timestamp, "2025-06-21T10:00:00.123Z")
			}
			if got := ev.GetRouting().GetTopic(); got != tt.wantTopic {
				t.Errorf("topic = %q, want %q", got, tt.wantTopic)
			}
			if got := ev.GetRouting().GetRoutingKey(); got != tt.wantKey {
				t.Errorf("routing_key = %q, want %q", got, tt.wantKey)
			}
		})
	}
}

func TestNormalizeKeepsGivenValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		timestamp     string
		wantTimestamp string
	}{
		{name: "UTC with milliseconds", timestamp: "2025-06-21T10:00:00.000Z", wantTimestamp: "2025-06-21T10:00:00.000Z"},
		{name: "offset is converted to UTC", timestamp: "2025-06-21T12:30:00+02:00", wantTimestamp: "2025-06-21T10:30:00.000Z"},
		{name: "nanoseconds are cut to milliseconds", timestamp: "2025-06-21T10:00:00.987654321Z", wantTimestamp: "2025-06-21T10:00:00.987Z"},
		{name: "no fraction", timestamp: "2025-06-21T10:00:00Z", wantTimestamp: "2025-06-21T10:00:00.000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := validEvent()
			ev.EventId = "evt-1"
			ev.Timestamp = tt.timestamp
			ev.Routing.Topic = "custom/topic"
			ev.Routing.RoutingKey = "custom.key"
			if err := routing.Normalize(ev, "", publishTime); err != nil {
				t.Fatalf("Normalize: %v", err)
			}
			if ev.EventId != "evt-1" || ev.Routing.Topic != "custom/topic" || ev.Routing.RoutingKey != "custom.key" {
				t.Errorf("Normalize replaced given values: event_id %q topic %q routing_key %q", ev.EventId, ev.Routing.Topic, ev.Routing.RoutingKey)
			}
			if ev.Timestamp != tt.wantTimestamp {
				t.Errorf("timestamp = %q, want %q", ev.Timestamp, tt.wantTimestamp)
			}
		})
	}
}

func TestNormalizeEventIDsAreUniqueAndOrdered(t *testing.T) {
	t.Parallel()
	var previous string
	for i := range 1000 {
		ev := validEvent()
		if err := routing.Normalize(ev, "", publishTime); err != nil {
			t.Fatalf("Normalize: %v", err)
		}
		if ev.EventId <= previous {
			t.Fatalf("event %d got id %q, not after the previous %q: UUIDv7 ids must be unique and sortable", i, ev.EventId, previous)
		}
		previous = ev.EventId
	}
}

func TestCheckBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		n        int
		wantText string
	}{
		{name: "empty", n: 0, wantText: "at least 1 event"},
		{name: "one", n: 1},
		{name: "at the limit", n: 1000},
		{name: "one over the limit", n: 1001, wantText: "at most 1000 events per publish (got 1001)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := routing.CheckBatch(tt.n)
			if tt.wantText == "" {
				if err != nil {
					t.Fatalf("CheckBatch(%d) = %v, want nil", tt.n, err)
				}
				return
			}
			if fields := fieldsOf(t, err); len(fields) != 1 || fields[0] != "events" {
				t.Fatalf("CheckBatch(%d) fields = %q, want [\"events\"]", tt.n, fields)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("CheckBatch(%d) = %q, want it to say %q", tt.n, err, tt.wantText)
			}
		})
	}
}

func TestCheckTopicName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		topic string
		valid bool
	}{
		{name: "default topic", topic: "portfolio/risk-budget/updated", valid: true},
		{name: "empty", topic: ""},
		{name: "200 characters", topic: strings.Repeat("a", 200), valid: true},
		{name: "201 characters", topic: strings.Repeat("a", 201)},
		{name: "space", topic: "a b"},
		{name: "non-ASCII letter", topic: "é"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := routing.CheckTopicName("topic_name", tt.topic)
			if (e == nil) != tt.valid {
				t.Fatalf("CheckTopicName(%q) = %v, want valid=%v", tt.topic, e, tt.valid)
			}
			if e != nil && e.Field != "topic_name" {
				t.Errorf("field = %q, want %q", e.Field, "topic_name")
			}
		})
	}
}

// TestCanonicalTimestampsAreKeptAsFormatTimestampWritesThem: the fast path for timestamps already in
// TimestampLayout must accept exactly what the parse-and-format path would leave unchanged.
func TestCanonicalTimestampsAreKeptAsFormatTimestampWritesThem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ts   string
	}{
		{name: "specification example", ts: "2025-06-21T10:00:00.000Z"},
		{name: "leap day", ts: "2024-02-29T23:59:59.999Z"},
		{name: "not a leap year", ts: "2023-02-29T00:00:00.000Z"},
		{name: "month 13", ts: "2025-13-01T00:00:00.000Z"},
		{name: "hour 24", ts: "2025-06-21T24:00:00.000Z"},
		{name: "second 60", ts: "2025-06-21T10:00:60.000Z"},
		{name: "year 0", ts: "0000-06-21T10:00:00.000Z"},
		{name: "year 9999", ts: "9999-12-31T23:59:59.999Z"},
		{name: "offset instead of Z", ts: "2025-06-21T10:00:00.000+0"},
		{name: "microseconds", ts: "2025-06-21T10:00:00.000001Z"},
		{name: "lower-case t", ts: "2025-06-21t10:00:00.000Z"},
		{name: "day 00", ts: "2025-06-00T10:00:00.000Z"},
		{name: "century, not a leap year", ts: "1900-02-29T00:00:00.000Z"},
		{name: "fourth century, a leap year", ts: "2000-02-29T00:00:00.000Z"},
		{name: "31st of a 30-day month", ts: "2025-04-31T00:00:00.000Z"},
		{name: "year 1", ts: "0001-01-01T00:00:00.000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := validEvent()
			ev.Timestamp = tt.ts
			err := routing.Normalize(ev, "", time.Now())
			parsed, parseErr := time.Parse(time.RFC3339Nano, tt.ts)
			canonical := parseErr == nil && parsed.Year() >= 1 && routing.FormatTimestamp(parsed) == tt.ts
			switch {
			case canonical && (err != nil || ev.GetTimestamp() != tt.ts):
				t.Fatalf("Normalize gave timestamp %q, err %v; want %q kept", ev.GetTimestamp(), err, tt.ts)
			case parseErr != nil && err == nil:
				t.Fatalf("Normalize accepted %q, which does not parse: %v", tt.ts, parseErr)
			case parseErr == nil && err == nil && ev.GetTimestamp() != routing.FormatTimestamp(parsed):
				t.Fatalf("Normalize gave timestamp %q, want %q", ev.GetTimestamp(), routing.FormatTimestamp(parsed))
			}
		})
	}
}

// TestCanonicalTimestampsOfEveryDateAreRecognised compares, for days 0 to 32 of months 0 to 13 in years
// around leap days, centuries and the ends of the range, Normalize's verdict with what time.Parse and
// FormatTimestamp say: a canonical timestamp is kept as given, any other is rewritten or refused.
func TestCanonicalTimestampsOfEveryDateAreRecognised(t *testing.T) {
	t.Parallel()
	for _, year := range []int{1, 1900, 2000, 2023, 2024, 9999} {
		for month := 0; month <= 13; month++ {
			for day := 0; day <= 32; day++ {
				ts := fmt.Sprintf("%04d-%02d-%02dT23:59:59.999Z", year, month, day)
				ev := validEvent()
				ev.Timestamp = ts
				err := routing.Normalize(ev, "", publishTime)
				parsed, parseErr := time.Parse(time.RFC3339Nano, ts)
				valid := parseErr == nil && routing.FormatTimestamp(parsed) == ts
				if valid != (err == nil && ev.GetTimestamp() == ts) {
					t.Fatalf("%s: Normalize gave %q, err %v; time.Parse: %v", ts, ev.GetTimestamp(), err, parseErr)
				}
			}
		}
	}
}
