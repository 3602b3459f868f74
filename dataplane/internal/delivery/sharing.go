package delivery

import "github.com/pds-platform/pds/common/filter"

// topicSharing tells whether an event of one topic may be delivered by more than one open session of this
// node, and so whether decoding or encoding it once for all of them can pay: the shared caches cost a
// hash, a copy and two allocations per event, wasted on an event only one session takes. It is a
// snapshot, replaced and never changed when a session of the topic opens or closes. The nil
// *topicSharing is a topic no session reads.
type topicSharing struct {
	// subscriptions counts the distinct subscriptions with an open session. The sessions of one
	// subscription share its events out among themselves, so they never hand out the same one at once.
	subscriptions int
	// byWorkflow counts them per subscriber workflow.
	byWorkflow map[string]int
	// maxPerWorkflow is the largest count of byWorkflow: when it is 1, an event of one target workflow
	// reaches at most one subscription, which shares can tell without a lookup per event.
	maxPerWorkflow int
}

// newTopicSharing counts the subscriptions whose sessions, among sessions, read the topic topicID.
func newTopicSharing(sessions map[string]*Session, topicID string) *topicSharing {
	workflows := map[string]string{} // subscription ID → its workflow
	for _, sess := range sessions {
		if sess.ref.Topic.ID == topicID {
			workflows[sess.ref.ID] = sess.ref.Workflow
		}
	}
	if len(workflows) == 0 {
		return nil
	}
	t := &topicSharing{subscriptions: len(workflows), byWorkflow: map[string]int{}}
	for _, workflow := range workflows {
		t.byWorkflow[workflow]++
		t.maxPerWorkflow = max(t.maxPerWorkflow, t.byWorkflow[workflow])
	}
	return t
}

// mayShare reports whether an event of the topic may reach more than one subscription, not knowing which
// workflows it targets.
func (t *topicSharing) mayShare() bool {
	return t != nil && t.subscriptions > 1
}

// shares reports whether the event summarized may reach more than one subscription. It counts every
// subscription of a workflow the event targets, whatever its filters, so it errs towards sharing.
func (t *topicSharing) shares(summary *filter.Summary) bool {
	if !t.mayShare() {
		return false
	}
	targets := summary.Targets()
	if len(targets) == 0 {
		return true
	}
	if len(targets) == 1 && t.maxPerWorkflow == 1 {
		return false
	}
	n := 0
	for _, workflow := range targets {
		if n += t.byWorkflow[string(workflow)]; n > 1 {
			return true
		}
	}
	return false
}
