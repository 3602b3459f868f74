// Package latest keeps the newest event per portfolio for the REST views (state, performance) in the
// broker's LatestViews table, so data-plane nodes stay stateless and every node answers the same.
//
// Views are written behind the publish path: Record only notes the newest value per (tenant, view,
// portfolio) and a background writer stores it, coalescing updates of one portfolio that arrive faster
// than the table takes writes. This keeps Publish's latency that of the event store alone (a table
// write per portfolio per batch would dominate it), like the TableView the pulsar driver reads. A node
// answers its own not-yet-stored values from memory, so a GET after a Publish on one node sees it; other
// nodes see it once the write lands: within a second (roundInterval), as a portfolio's view is written at
// most once per write round.
package latest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"google.golang.org/protobuf/proto"
)

// View names one latest-per-portfolio table.
type View string

const (
	// ViewState holds the newest PORTFOLIO_STATE event per portfolio.
	ViewState View = "state"
	// ViewPerformance holds the newest PERFORMANCE_ATTRIBUTION event per portfolio.
	ViewPerformance View = "performance"
)

// ErrUnsupported is returned when the broker driver has no LatestViews capability.
var ErrUnsupported = errors.New("the broker keeps no latest views")

const (
	// writeConcurrency is how many table writes run at once.
	writeConcurrency = 8
	// retryPause is the wait after a failed table write before it is tried again.
	retryPause = time.Second
	// roundInterval is the least time from one write round's start to the next's, unless Flush is
	// waiting. A portfolio's view is written at most once per interval, however often its events come:
	// on the 2-core VM, rounds run back to back wrote 5,000 values a second at 10K events/s over 1,000
	// portfolios, a sixth of a core.
	roundInterval = time.Second
)

// ViewOf returns the view an event of the data type updates; ok is false for types without a view.
func ViewOf(t pdsv1.PortfolioDataType) (View, bool) {
	switch t {
	case pdsv1.PortfolioDataType_PORTFOLIO_STATE:
		return ViewState, true
	case pdsv1.PortfolioDataType_PERFORMANCE_ATTRIBUTION:
		return ViewPerformance, true
	default:
		return "", false
	}
}

type slot struct {
	tenantID    string
	view        View
	portfolioID string
}

type pendingValue struct {
	value []byte
	seq   uint64
}

// Store records and reads the views. Its methods are safe for concurrent use; Close stops it.
type Store struct {
	views  broker.LatestViews
	logger *slog.Logger

	mu        sync.Mutex
	pending   map[slot]pendingValue
	seq       uint64
	roundDone chan struct{} // closed and replaced after each write round
	lastErr   error

	wake       chan struct{}
	hurry      chan struct{} // Flush is waiting: start the next round now
	stopWriter context.CancelFunc
	writerDone chan struct{}
}

// New finds the LatestViews capability of b and starts the background writer; a Store over a broker
// without it records nothing and answers reads with ErrUnsupported.
func New(b broker.Broker, logger *slog.Logger) *Store {
	views, _ := b.(broker.LatestViews)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		views:      views,
		logger:     logger,
		pending:    map[slot]pendingValue{},
		roundDone:  make(chan struct{}),
		wake:       make(chan struct{}, 1),
		hurry:      make(chan struct{}, 1),
		stopWriter: cancel,
		writerDone: make(chan struct{}),
	}
	go s.runWriter(ctx)
	return s
}

// Supported reports whether the broker keeps latest views.
func (s *Store) Supported() bool { return s.views != nil }

// A view's value in the table is one of:
//
//	0x00 | PortfolioDistribution   the event as the broker stores it (storedEventFormat)
//	PortfolioDistributed           written by earlier versions; a protobuf message never starts with 0x00
//
// Keeping the stored form spares Publish a second encoding of every event with a view; Get, far rarer,
// converts it.
const storedEventFormat byte = 0x00

// Record notes the views of already stored, normalized events, given with their stored encodings
// (stored[i] is events[i] as the broker keeps it); the last event per (view, portfolio) wins. Events
// without a view are skipped. It does not block on the table.
func (s *Store) Record(tenantID string, events []*pdsv1.PortfolioDistribution, stored [][]byte) error {
	if s.views == nil {
		return nil
	}
	if len(stored) != len(events) {
		return fmt.Errorf("record views: %d events but %d encodings", len(events), len(stored))
	}
	recorded := false
	s.mu.Lock()
	// In batch order, so the last event of a slot is the one left pending.
	for i, ev := range events {
		view, ok := ViewOf(ev.GetDataType())
		if !ok {
			continue
		}
		value := make([]byte, 1+len(stored[i]))
		value[0] = storedEventFormat
		copy(value[1:], stored[i])
		s.seq++
		// A published event's strings may share its whole request's memory (eventwire), and the map keeps
		// the key it was first given for as long as the slot stays pending, which under load can be long:
		// the key gets its own copy.
		key := slot{tenantID, view, strings.Clone(ev.GetData().GetPortfolioId())}
		s.pending[key] = pendingValue{value: value, seq: s.seq}
		recorded = true
	}
	s.mu.Unlock()
	if !recorded {
		return nil
	}
	s.signal()
	return nil
}

// Get returns the newest event of the view for a portfolio; ok is false when none was recorded.
func (s *Store) Get(ctx context.Context, tenantID string, view View, portfolioID string) (*pdsv1.PortfolioDistributed, bool, error) {
	if s.views == nil {
		return nil, false, ErrUnsupported
	}
	s.mu.Lock()
	p, ok := s.pending[slot{tenantID, view, portfolioID}]
	s.mu.Unlock()
	value := p.value
	if !ok {
		var err error
		value, ok, err = s.views.GetLatest(ctx, tenantID, string(view), portfolioID)
		if err != nil {
			return nil, false, fmt.Errorf("get %s view of portfolio %q: %w", view, portfolioID, err)
		}
		if !ok {
			return nil, false, nil
		}
	}
	ev, err := decodeView(value)
	if err != nil {
		return nil, false, fmt.Errorf("decode %s view of portfolio %q: %w", view, portfolioID, err)
	}
	return ev, true, nil
}

func decodeView(value []byte) (*pdsv1.PortfolioDistributed, error) {
	if len(value) > 0 && value[0] == storedEventFormat {
		var stored pdsv1.PortfolioDistribution
		if err := proto.Unmarshal(value[1:], &stored); err != nil {
			return nil, err
		}
		return routing.ToDistributed(&stored), nil
	}
	var ev pdsv1.PortfolioDistributed
	if err := proto.Unmarshal(value, &ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

// Flush blocks until every recorded value is stored in the table, or ctx ends.
func (s *Store) Flush(ctx context.Context) error {
	for {
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.mu.Unlock()
			return nil
		}
		round, lastErr := s.roundDone, s.lastErr
		s.mu.Unlock()
		s.signal()
		select {
		case s.hurry <- struct{}{}:
		default:
		}
		select {
		case <-round:
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("flush latest views: %w (last write error: %v)", ctx.Err(), lastErr)
			}
			return fmt.Errorf("flush latest views: %w", ctx.Err())
		}
	}
}

// Close flushes (bounded by ctx) and stops the writer. Values not stored by then are lost; the next
// event of their portfolio writes the view again.
func (s *Store) Close(ctx context.Context) error {
	err := s.Flush(ctx)
	s.stopWriter()
	<-s.writerDone
	return err
}

func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// runWriter stores pending values in rounds until ctx ends. A key is written by one round at a time, so
// a newer value never lands before an older one.
func (s *Store) runWriter(ctx context.Context) {
	defer close(s.writerDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			round := make(map[slot]pendingValue, len(s.pending))
			for k, v := range s.pending {
				round[k] = v
			}
			s.mu.Unlock()
			if len(round) == 0 {
				break
			}
			started := time.Now()
			failed := s.writeRound(ctx, round)
			if ctx.Err() != nil {
				return
			}
			pause, hurry := roundInterval-time.Since(started), s.hurry
			if failed {
				// Flush does not shorten this pause: it would retry a failing table without rest.
				pause, hurry = retryPause, nil
			}
			if pause > 0 {
				select {
				case <-ctx.Done():
					return
				case <-hurry:
				case <-time.After(pause):
				}
			}
		}
	}
}

func (s *Store) writeRound(ctx context.Context, round map[slot]pendingValue) (failed bool) {
	type result struct {
		key slot
		seq uint64
		err error
	}
	results := make(chan result, len(round))
	limit := make(chan struct{}, writeConcurrency)
	var wg sync.WaitGroup
	for key, p := range round {
		limit <- struct{}{}
		wg.Go(func() {
			defer func() { <-limit }()
			err := s.views.PutLatest(ctx, key.tenantID, string(key.view), key.portfolioID, p.value)
			results <- result{key, p.seq, err}
		})
	}
	wg.Wait()
	close(results)

	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range results {
		if r.err != nil {
			failed = true
			s.lastErr = r.err
			continue
		}
		if cur, ok := s.pending[r.key]; ok && cur.seq == r.seq {
			delete(s.pending, r.key)
		}
	}
	if failed && ctx.Err() == nil {
		s.logger.Warn("latest view write failed; retrying", "pending", len(s.pending), "error", s.lastErr)
	}
	close(s.roundDone)
	s.roundDone = make(chan struct{})
	return failed
}
