package replication_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/jackc/pgx/v5"
	"github.com/pds-platform/pds/common/configfsm"
	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/controlplane/internal/replication"
	"github.com/pds-platform/pds/controlplane/internal/store"
	"github.com/pds-platform/pds/db/pgtest"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const waitLimit = 20 * time.Second

func openStore(t *testing.T, databaseURL string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), databaseURL)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// startReplicator starts a voter on dir against st and waits until it is ready (leader, outbox applied).
func startReplicator(t *testing.T, st *store.Store, dir string, opts replication.Options) (*replication.Replicator, *configfsm.FSM) {
	t.Helper()
	fsm := configfsm.New(nil)
	opts.NodeID, opts.BindAddr, opts.Dir = "cp-1", "127.0.0.1:0", dir
	rep, err := replication.Start(context.Background(), replication.Deps{
		Outbox: st, FSM: fsm, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, opts)
	if err != nil {
		t.Fatalf("start replication: %v", err)
	}
	t.Cleanup(func() { _ = rep.Close() }) // Close is idempotent; some tests close earlier
	waitFor(t, "the replicator to become ready", func() bool { ok, _, _ := rep.Ready(); return ok })
	return rep, fsm
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitApplied(t *testing.T, rep *replication.Replicator, outboxID uint64) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	version, err := rep.WaitApplied(ctx, outboxID)
	if err != nil {
		t.Fatalf("WaitApplied(%d): %v", outboxID, err)
	}
	return version
}

func createTopic(t *testing.T, st *store.Store, name string, partitions int32) uint64 {
	t.Helper()
	_, outboxID, err := st.CreateTopic(context.Background(), tenancy.DefaultTenantID, &pdsv1.Topic{
		TopicName: name, DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: partitions, Enabled: true,
	})
	if err != nil {
		t.Fatalf("create topic %q: %v", name, err)
	}
	return outboxID
}

func TestStoreWritesReachTheConfigInOrder(t *testing.T) {
	t.Parallel()
	st := openStore(t, pgtest.NewDatabase(t))
	rep, fsm := startReplicator(t, st, t.TempDir(), replication.Options{})
	ctx := context.Background()

	var ids []uint64
	ids = append(ids, createTopic(t, st, "portfolio/state/updated", 2))
	for _, partitions := range []int32{4, 8, 16} {
		_, id, err := st.UpdateTopic(ctx, tenancy.DefaultTenantID, &pdsv1.Topic{
			TopicName: "portfolio/state/updated", DataType: pdsv1.PortfolioDataType_PORTFOLIO_STATE, Partitions: partitions,
		})
		if err != nil {
			t.Fatalf("update topic to %d partitions: %v", partitions, err)
		}
		ids = append(ids, id)
	}
	ids = append(ids, createTopic(t, st, "portfolio/cash/updated", 1))
	delID, err := st.DeleteTopic(ctx, tenancy.DefaultTenantID, "portfolio/cash/updated")
	if err != nil {
		t.Fatalf("delete topic: %v", err)
	}
	ids = append(ids, delID)

	// WaitApplied for the last write only: the earlier ones must already be in, in write order.
	version := waitApplied(t, rep, ids[len(ids)-1])
	cfg := fsm.Current()
	if cfg.Version < version {
		t.Fatalf("config version %d is below the version WaitApplied returned (%d)", cfg.Version, version)
	}
	if cfg.LastOutboxID != ids[len(ids)-1] {
		t.Fatalf("LastOutboxID = %d, want the last write's outbox id %d", cfg.LastOutboxID, ids[len(ids)-1])
	}
	topic, ok := cfg.Topic(tenancy.DefaultTenantID, "portfolio/state/updated")
	if !ok {
		t.Fatalf("topic portfolio/state/updated missing from the replicated config")
	}
	if topic.GetPartitions() != 16 {
		t.Fatalf("partitions = %d, want 16 from the last update (updates applied out of order?)", topic.GetPartitions())
	}
	if _, ok := cfg.Topic(tenancy.DefaultTenantID, "portfolio/cash/updated"); ok {
		t.Fatalf("deleted topic portfolio/cash/updated is still in the replicated config")
	}
}

func TestWaitAppliedReturnsTheVersionHoldingTheWrite(t *testing.T) {
	t.Parallel()
	st := openStore(t, pgtest.NewDatabase(t))
	rep, fsm := startReplicator(t, st, t.TempDir(), replication.Options{})

	var previous uint64
	for i := range 3 {
		name := fmt.Sprintf("portfolio/topic-%d", i)
		version := waitApplied(t, rep, createTopic(t, st, name, 1))
		if version <= previous {
			t.Fatalf("write %d got config version %d, not above the previous write's %d", i, version, previous)
		}
		previous = version
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		cfg, err := fsm.WaitForVersion(ctx, version)
		cancel()
		if err != nil {
			t.Fatalf("wait for version %d: %v", version, err)
		}
		if _, ok := cfg.Topic(tenancy.DefaultTenantID, name); !ok {
			t.Fatalf("config at version %d (returned by WaitApplied) lacks topic %q", version, name)
		}
	}
}

func TestWaitAppliedHonoursContext(t *testing.T) {
	t.Parallel()
	st := openStore(t, pgtest.NewDatabase(t))
	rep, _ := startReplicator(t, st, t.TempDir(), replication.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := rep.WaitApplied(ctx, 1_000_000); err == nil {
		t.Fatalf("WaitApplied for an outbox id never written returned no error")
	}
}

func TestRestartResumesWithoutRepeatingOrSkippingRows(t *testing.T) {
	t.Parallel()
	st := openStore(t, pgtest.NewDatabase(t))
	dir := t.TempDir()

	first, _ := startReplicator(t, st, dir, replication.Options{})
	var written []uint64
	for i := range 3 {
		written = append(written, createTopic(t, st, fmt.Sprintf("portfolio/before-%d", i), 1))
	}
	waitApplied(t, first, written[len(written)-1])
	if err := first.Close(); err != nil {
		t.Fatalf("close first replicator: %v", err)
	}
	for i := range 2 { // committed while no leader runs
		written = append(written, createTopic(t, st, fmt.Sprintf("portfolio/during-%d", i), 1))
	}

	second, fsm := startReplicator(t, st, dir, replication.Options{})
	waitApplied(t, second, written[len(written)-1])
	for i := range 3 {
		if _, ok := fsm.Current().Topic(tenancy.DefaultTenantID, fmt.Sprintf("portfolio/before-%d", i)); !ok {
			t.Fatalf("topic portfolio/before-%d written before the restart is missing after it", i)
		}
	}
	for i := range 2 {
		if _, ok := fsm.Current().Topic(tenancy.DefaultTenantID, fmt.Sprintf("portfolio/during-%d", i)); !ok {
			t.Fatalf("topic portfolio/during-%d written while stopped was skipped", i)
		}
	}
	if err := second.Close(); err != nil {
		t.Fatalf("close second replicator: %v", err)
	}

	if got := outboxIDsInRaftLog(t, dir); !equalIDs(got, written) {
		t.Fatalf("raft log holds outbox ids %v, want each written id once in order %v", got, written)
	}
}

func TestAppliedRowsArePruned(t *testing.T) {
	t.Parallel()
	st := openStore(t, pgtest.NewDatabase(t))
	rep, _ := startReplicator(t, st, t.TempDir(), replication.Options{PruneMargin: 1, PollInterval: 20 * time.Millisecond})
	var last uint64
	for i := range 4 {
		last = createTopic(t, st, fmt.Sprintf("portfolio/prune-%d", i), 1)
	}
	waitApplied(t, rep, last)
	waitFor(t, "outbox rows more than 1 below the last applied id to be pruned", func() bool {
		rows, err := st.ListOutboxAfter(context.Background(), 0, 100)
		if err != nil {
			t.Fatalf("list outbox: %v", err)
		}
		return len(rows) == 1 && rows[0].ID == last
	})
}

// outboxIDsInRaftLog reads the stopped voter's raft log and returns the outbox id of every command entry.
func outboxIDsInRaftLog(t *testing.T, dir string) []uint64 {
	t.Helper()
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatalf("open raft log: %v", err)
	}
	defer logs.Close()
	first, err := logs.FirstIndex()
	if err != nil {
		t.Fatalf("raft log first index: %v", err)
	}
	lastIndex, err := logs.LastIndex()
	if err != nil {
		t.Fatalf("raft log last index: %v", err)
	}
	var ids []uint64
	for i := first; i <= lastIndex && i > 0; i++ {
		var entry raft.Log
		if err := logs.GetLog(i, &entry); err != nil {
			t.Fatalf("read raft log entry %d: %v", i, err)
		}
		if entry.Type != raft.LogCommand {
			continue
		}
		kind, payload, err := configfsm.DecodeCommandType(entry.Data)
		if err != nil || kind != configv1.CommandType_COMMAND_TYPE_PUT_TOPIC {
			t.Fatalf("raft log entry %d: unexpected command %v (%v)", i, kind, err)
		}
		var cmd configv1.PutTopic
		if err := proto.Unmarshal(payload, &cmd); err != nil {
			t.Fatalf("decode raft log entry %d: %v", i, err)
		}
		ids = append(ids, cmd.GetOutboxId())
	}
	return ids
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRejectedRowFailsItsWaiterAndDoesNotBlockLaterRows(t *testing.T) {
	t.Parallel()
	databaseURL := pgtest.NewDatabase(t)
	st := openStore(t, databaseURL)
	rep, fsm := startReplicator(t, st, t.TempDir(), replication.Options{})

	conn, err := pgx.Connect(context.Background(), databaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	var badID int64
	// Command type 250 is unknown to the state machine, as a row written by a newer release would be.
	if err := conn.QueryRow(context.Background(), "INSERT INTO config_outbox (command) VALUES ($1) RETURNING id", []byte{250, 1, 2}).Scan(&badID); err != nil {
		t.Fatalf("insert unknown command: %v", err)
	}
	goodID := createTopic(t, st, "portfolio/after-rejected", 1)

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := rep.WaitApplied(ctx, uint64(badID)); err == nil || ctx.Err() != nil {
		t.Fatalf("WaitApplied for the rejected row: err %v (ctx %v), want a prompt rejection error", err, ctx.Err())
	}
	waitApplied(t, rep, goodID)
	if _, ok := fsm.Current().Topic(tenancy.DefaultTenantID, "portfolio/after-rejected"); !ok {
		t.Fatalf("row written after a rejected one never reached the config")
	}
}
