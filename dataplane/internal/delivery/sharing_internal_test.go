package delivery

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/broker"
)

func TestTopicSharingCountsSubscriptionsThatMayTakeAnEvent(t *testing.T) {
	t.Parallel()
	session := func(topic, subscription, workflow string) *Session {
		return &Session{ref: broker.SubscriptionRef{ID: subscription, Topic: broker.TopicRef{ID: topic}, Workflow: workflow}}
	}
	sessions := map[string]*Session{
		// Three sessions of one subscription share its events out: one subscription of workflow a.
		"1": session("t1", "sub-a", "a"), "2": session("t1", "sub-a", "a"), "3": session("t1", "sub-a", "a"),
		"4": session("t1", "sub-b1", "b"), "5": session("t1", "sub-b2", "b"),
		"6": session("t2", "sub-c", "c"), "7": session("t2", "sub-c", "c"),
		// One subscription per workflow, as most topics have.
		"8": session("t4", "sub-d", "d"), "9": session("t4", "sub-e", "e"), "10": session("t4", "sub-e", "e"),
	}
	summarize := func(targets ...string) *filter.Summary {
		encoded, err := proto.Marshal(&pdsv1.PortfolioDistribution{Routing: &pdsv1.RoutingInfo{TargetWorkflows: targets}})
		if err != nil {
			t.Fatal(err)
		}
		var s filter.Summary
		if err := filter.Summarize(encoded, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}

	t1 := newTopicSharing(sessions, "t1")
	if !t1.mayShare() {
		t.Error("topic t1 with three subscriptions: mayShare false")
	}
	for _, tt := range []struct {
		targets []string
		want    bool
	}{
		{targets: []string{"a"}, want: false},
		{targets: []string{"b"}, want: true},
		{targets: []string{"a", "c"}, want: false},
		{targets: []string{"a", "b"}, want: true},
		{targets: nil, want: true},
		{targets: []string{"nobody"}, want: false},
	} {
		if got := t1.shares(summarize(tt.targets...)); got != tt.want {
			t.Errorf("topic t1, event targeting %q: shares = %v, want %v", tt.targets, got, tt.want)
		}
	}

	t4 := newTopicSharing(sessions, "t4")
	for _, tt := range []struct {
		targets []string
		want    bool
	}{
		{targets: []string{"d"}, want: false},
		{targets: []string{"e"}, want: false},
		{targets: []string{"d", "e"}, want: true},
		{targets: []string{"d", "nobody"}, want: false},
		{targets: nil, want: true},
	} {
		if got := t4.shares(summarize(tt.targets...)); got != tt.want {
			t.Errorf("topic t4, event targeting %q: shares = %v, want %v", tt.targets, got, tt.want)
		}
	}

	t2 := newTopicSharing(sessions, "t2")
	if t2.mayShare() || t2.shares(summarize()) {
		t.Error("topic t2 read by the two sessions of one subscription: an event may be shared")
	}
	if got := newTopicSharing(sessions, "t3"); got != nil || got.mayShare() || got.shares(summarize()) {
		t.Errorf("topic no session reads: %+v, want nil, sharing nothing", got)
	}
}
