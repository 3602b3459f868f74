package db_test

import (
	"context"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pds-platform/pds/db"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T, databaseURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// shippedVersions lists the versions of the migration files in db.Migrations, in order.
func shippedVersions(t *testing.T) []int64 {
	t.Helper()
	names, err := fs.Glob(db.Migrations, "migrations/*.sql")
	if err != nil {
		t.Fatalf("list migrations: %v", err)
	}
	var versions []int64
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.ParseInt(base[:strings.IndexByte(base, '_')], 10, 64)
		if err != nil {
			t.Fatalf("migration %s has no numeric version prefix: %v", name, err)
		}
		versions = append(versions, v)
	}
	slices.Sort(versions)
	return versions
}

// appliedVersions lists the versions goose recorded as applied, in order.
func appliedVersions(t *testing.T, conn *pgx.Conn) []int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		"SELECT version_id FROM goose_db_version WHERE is_applied AND version_id > 0 ORDER BY id")
	if err != nil {
		t.Fatalf("read goose_db_version: %v", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("read goose_db_version: %v", err)
	}
	return versions
}

func TestMigrateCreatesSchemaOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	databaseURL := pgtest.NewEmptyDatabase(t)
	ctx := context.Background()

	if err := db.Migrate(ctx, databaseURL); err != nil {
		t.Fatalf("Migrate on an empty database: %v", err)
	}

	conn := connect(t, databaseURL)
	for _, table := range []string{"tenants", "portfolio_topics", "portfolio_subscriptions", "config_outbox", "topic_broker_status"} {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
			t.Fatalf("look up table %s: %v", table, err)
		}
		if !exists {
			t.Errorf("table %s missing after Migrate", table)
		}
	}
	var tenantName string
	if err := conn.QueryRow(ctx, "SELECT name FROM tenants WHERE id = '00000000-0000-0000-0000-000000000001'").Scan(&tenantName); err != nil {
		t.Fatalf("default tenant missing after Migrate: %v", err)
	}
	if got, want := appliedVersions(t, conn), shippedVersions(t); !slices.Equal(got, want) {
		t.Errorf("applied versions = %v, want every shipped migration %v", got, want)
	}
}

func TestMigrateTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	databaseURL := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn := connect(t, databaseURL)
	before := appliedVersions(t, conn)

	if err := db.Migrate(ctx, databaseURL); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}

	after := appliedVersions(t, conn)
	if len(after) != len(before) {
		t.Errorf("second Migrate recorded migrations again: before %v, after %v", before, after)
	}
	var tenants int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM tenants").Scan(&tenants); err != nil {
		t.Fatalf("count tenants: %v", err)
	}
	if tenants != 1 {
		t.Errorf("tenants = %d after a second Migrate, want 1 (seed ran twice?)", tenants)
	}
}

func TestMigrateConcurrentStartsApplyOnce(t *testing.T) {
	t.Parallel()
	databaseURL := pgtest.NewEmptyDatabase(t)
	ctx := context.Background()

	const replicas = 3
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { errs[i] = db.Migrate(ctx, databaseURL) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: Migrate: %v", i, err)
		}
	}

	conn := connect(t, databaseURL)
	if got, want := appliedVersions(t, conn), shippedVersions(t); !slices.Equal(got, want) {
		t.Errorf("applied versions = %v after %d concurrent Migrate calls, want each shipped migration once: %v", got, replicas, want)
	}
}
