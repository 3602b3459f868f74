package jsoncodec_test

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
)

// specExampleEvent is what a producer publishes to get the specification's example event.
func specExampleEvent() *pdsv1.PortfolioDistribution {
	return &pdsv1.PortfolioDistribution{
		DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE,
		Data: &pdsv1.PortfolioData{
			PortfolioId:        "portfolio_001",
			TotalValue:         1000000.00,
			PerformanceMetrics: &pdsv1.PerformanceMetricsData{DailyReturn: 0.012, YtdReturn: 0.085},
		},
		Routing: &pdsv1.RoutingInfo{TargetWorkflows: []string{"reporting_analytics", "user_interface"}},
	}
}

func parseJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return v
}

// camelCaseKeys returns every object key, at any depth, that is not snake_case.
func camelCaseKeys(v any, path string) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if strings.IndexFunc(k, unicode.IsUpper) >= 0 {
				out = append(out, path+"."+k)
			}
			out = append(out, camelCaseKeys(child, path+"."+k)...)
		}
	case []any:
		for _, child := range v {
			out = append(out, camelCaseKeys(child, path+"[]")...)
		}
	}
	return out
}

func TestPublishedEventMarshalsToTheSpecificationExample(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("testdata/spec_example.json")
	if err != nil {
		t.Fatalf("read example: %v", err)
	}
	ev := specExampleEvent()
	if err := routing.Normalize(ev, "", time.Date(2025, 6, 21, 10, 0, 0, 0, time.UTC)); err != nil {
		t.Fatalf("Normalize: %v", err)
	}

	b, err := jsoncodec.Marshal(routing.ToDistributed(ev))
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}

	got, wantValue := parseJSON(t, b), parseJSON(t, want)
	if id, ok := got["event_id"].(string); !ok || id == "" {
		t.Errorf("event_id = %v, want a non-empty string", got["event_id"])
	}
	got["event_id"] = wantValue["event_id"] // the example's id is a placeholder
	if !reflect.DeepEqual(got, wantValue) {
		t.Errorf("portfolio_distributed JSON differs from the specification's example\n got: %s\nwant: %s", b, want)
	}
}

func TestMarshalUsesSnakeCaseEverywhere(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{name: "risk budget details", msg: &pdsv1.PortfolioDistributed{Data: &pdsv1.PortfolioData{
			Details: &pdsv1.PortfolioData_RiskBudget{RiskBudget: &pdsv1.RiskBudgetDetails{
				ValueAtRisk_95: 1.5, Allocations: []*pdsv1.RiskAllocation{{Factor: "rates"}},
			}},
		}}},
		{name: "cash management details", msg: &pdsv1.PortfolioDistributed{Data: &pdsv1.PortfolioData{
			Details: &pdsv1.PortfolioData_CashManagement{CashManagement: &pdsv1.CashManagementDetails{
				PendingSettlements: 3, Flows: []*pdsv1.CashFlow{{Date: "2025-06-21"}},
			}},
		}}},
		{name: "empty published event", msg: &pdsv1.PortfolioDistribution{}},
		{name: "subscription", msg: &pdsv1.Subscription{Filters: &pdsv1.SubscriptionFilters{MinPriority: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := jsoncodec.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if bad := camelCaseKeys(parseJSON(t, b), ""); len(bad) > 0 {
				t.Errorf("lowerCamelCase keys %v in %s", bad, b)
			}
		})
	}
}

func TestMarshalEmitsUnsetFields(t *testing.T) {
	t.Parallel()
	b, err := jsoncodec.Marshal(&pdsv1.PortfolioDistributed{})
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	got := parseJSON(t, b)
	for _, key := range []string{"event_id", "timestamp", "distribution", "data"} {
		if _, ok := got[key]; !ok {
			t.Errorf("key %q missing from %s: subscribers rely on every specified key being present", key, b)
		}
	}
}

func TestUnmarshal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		json    string
		wantErr string
		check   func(*pdsv1.PortfolioDistribution) bool
	}{
		{name: "snake_case names", json: `{"event_id":"e1","data_type":"REBALANCING","routing":{"routing_key":"k","target_workflows":["w"]}}`,
			check: func(ev *pdsv1.PortfolioDistribution) bool {
				return ev.EventId == "e1" && ev.DataType == pdsv1.PortfolioDataType_REBALANCING && ev.Routing.RoutingKey == "k"
			}},
		{name: "lowerCamelCase names are accepted too", json: `{"eventId":"e1","dataType":3}`,
			check: func(ev *pdsv1.PortfolioDistribution) bool {
				return ev.EventId == "e1" && ev.DataType == pdsv1.PortfolioDataType_REBALANCING
			}},
		{name: "unknown field", json: `{"event_id":"e1","evnt_type":"x"}`, wantErr: "evnt_type"},
		{name: "not JSON", json: `{"event_id":`, wantErr: "unmarshal pds.v1.PortfolioDistribution"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ev pdsv1.PortfolioDistribution
			err := jsoncodec.Unmarshal([]byte(tt.json), &ev)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Unmarshal(%s) error = %v, want one mentioning %q", tt.json, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.json, err)
			}
			if !tt.check(&ev) {
				t.Errorf("Unmarshal(%s) = %v, fields not as sent", tt.json, &ev)
			}
		})
	}
}

func TestCodec(t *testing.T) {
	t.Parallel()
	c := jsoncodec.Codec()
	if c.Name() != "json" {
		t.Fatalf("Codec().Name() = %q, want \"json\" so it replaces Connect's default JSON codec", c.Name())
	}
	in := routing.ToDistributed(specExampleEvent())
	b, err := c.Marshal(in)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !strings.Contains(string(b), `"target_workflows"`) {
		t.Errorf("codec output %s lacks snake_case target_workflows", b)
	}
	var out pdsv1.PortfolioDistributed
	if err := c.Unmarshal(b, &out); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if !proto.Equal(in, &out) {
		t.Errorf("round trip changed the message:\n in %v\nout %v", in, &out)
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("Marshal of a non-proto value succeeded, want an error")
	}
	if err := c.Unmarshal(nil, &out); err == nil {
		t.Error("Unmarshal of an empty payload succeeded, want an error like Connect's own codec")
	}
}
