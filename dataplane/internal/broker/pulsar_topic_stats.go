package broker

import (
	"context"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
)

// topicStatsReads shares the reads of a topic's partitioned stats among a node's consumers of that
// topic. Every stream of every subscription has its own consumer and its own attach checks, which run at
// about the same moments after a node starts; alone, they would ask the admin API for the same stats once
// per stream. A read in flight, or finished less than statsMaxAge ago, answers the callers that come
// meanwhile.
type topicStatsReads struct {
	read func(ctx context.Context, topic string) (utils.PartitionedTopicStats, error)

	mu    sync.Mutex
	reads map[string]*topicStatsRead // by topic
}

type topicStatsRead struct {
	done  chan struct{} // closed when the fields below are set
	at    time.Time
	stats utils.PartitionedTopicStats
	err   error
}

// statsMaxAge is how old a read of a topic's stats may be to answer another consumer's check: well under
// firstAttachCheckInterval, so each check of a consumer sees stats newer than its previous check.
const statsMaxAge = firstAttachCheckInterval / 2

func newTopicStatsReads(read func(ctx context.Context, topic string) (utils.PartitionedTopicStats, error)) *topicStatsReads {
	return &topicStatsReads{read: read, reads: map[string]*topicStatsRead{}}
}

// get returns the topic's stats, read now or shared with another caller (see topicStatsReads). A failed
// read is shared with those waiting for it, and the next caller reads again.
func (s *topicStatsReads) get(ctx context.Context, topic string) (utils.PartitionedTopicStats, error) {
	now := time.Now()
	s.mu.Lock()
	r := s.reads[topic]
	if r == nil || !r.usableAt(now) {
		r = &topicStatsRead{done: make(chan struct{})}
		s.reads[topic] = r
		s.forgetOld(now)
		s.mu.Unlock()
		r.stats, r.err = s.read(ctx, topic)
		r.at = time.Now()
		close(r.done)
		return r.stats, r.err
	}
	s.mu.Unlock()
	select {
	case <-r.done:
		return r.stats, r.err
	case <-ctx.Done():
		return utils.PartitionedTopicStats{}, ctx.Err()
	}
}

// usableAt reports whether r can answer a caller at now: still in flight, or done recently and well.
// Called with the reads' mutex held; r.at and r.err are read only once done is closed.
func (r *topicStatsRead) usableAt(now time.Time) bool {
	select {
	case <-r.done:
		return r.err == nil && now.Sub(r.at) < statsMaxAge
	default:
		return true
	}
}

// forgetOld drops finished reads too old to answer anyone, so deleted topics do not stay. Called with the
// mutex held.
func (s *topicStatsReads) forgetOld(now time.Time) {
	for topic, r := range s.reads {
		if !r.usableAt(now) {
			delete(s.reads, topic)
		}
	}
}
