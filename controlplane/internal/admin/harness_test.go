package admin_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/pds-platform/pds/common/configfsm"
	"github.com/pds-platform/pds/common/filter"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/controlplane/internal/admin"
	"github.com/pds-platform/pds/controlplane/internal/store"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// outboxApplier is a single-node replicated config without the raft transport: it applies committed outbox
// rows, read back from the store in id order, to a real configfsm.FSM, giving each the next log index.
type outboxApplier struct {
	store *store.Store
	fsm   *configfsm.FSM

	mu          sync.Mutex
	lastIndex   uint64
	lastApplied uint64 // outbox id of the last row applied
}

var _ admin.ConfigWaiter = (*outboxApplier)(nil)

func (a *outboxApplier) WaitApplied(ctx context.Context, outboxID uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.lastApplied < outboxID {
		entries, err := a.store.ListOutboxAfter(ctx, a.lastApplied, 100)
		if err != nil {
			return 0, err
		}
		if len(entries) == 0 {
			return 0, fmt.Errorf("outbox row %d is not in the outbox (last applied %d)", outboxID, a.lastApplied)
		}
		for _, entry := range entries {
			a.lastIndex++
			if res := a.fsm.Apply(&raft.Log{Index: a.lastIndex, Type: raft.LogCommand, Data: entry.Command}); res != nil {
				return 0, fmt.Errorf("apply outbox row %d: %v", entry.ID, res)
			}
			a.lastApplied = entry.ID
		}
	}
	return a.fsm.Current().Version, nil
}

type harness struct {
	store   *store.Store
	fsm     *configfsm.FSM
	topics  pdsv1connect.TopicServiceClient
	subs    pdsv1connect.SubscriptionServiceClient
	baseURL string
}

// newHarness serves both admin services over HTTP against a fresh database.
func newHarness(t *testing.T) *harness {
	t.Helper()
	databaseURL := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, databaseURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	fsm := configfsm.New(filter.Compiler)
	deps := admin.Deps{
		Store:  st,
		Waiter: &outboxApplier{store: st, fsm: fsm},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	codec := connect.WithCodec(jsoncodec.Codec())
	mux := http.NewServeMux()
	mux.Handle(pdsv1connect.NewTopicServiceHandler(admin.NewTopicService(deps), codec))
	mux.Handle(pdsv1connect.NewSubscriptionServiceHandler(admin.NewSubscriptionService(deps), codec))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &harness{
		store:   st,
		fsm:     fsm,
		topics:  pdsv1connect.NewTopicServiceClient(srv.Client(), srv.URL),
		subs:    pdsv1connect.NewSubscriptionServiceClient(srv.Client(), srv.URL),
		baseURL: srv.URL,
	}
}
