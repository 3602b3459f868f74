package pgtest_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDatabaseIsMigratedAndPrivate(t *testing.T) {
	t.Parallel()
	first := pgtest.NewDatabase(t)
	second := pgtest.NewDatabase(t)
	if first == second {
		t.Fatalf("two calls returned the same database %s", first)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, first)
	if err != nil {
		t.Fatalf("connect to new database: %v", err)
	}
	defer conn.Close(ctx)
	var topics int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM portfolio_topics").Scan(&topics); err != nil {
		t.Fatalf("new database is not migrated: %v", err)
	}
	if topics != 0 {
		t.Errorf("new database has %d topics, want 0", topics)
	}
}

func TestDatabaseIsDroppedWhenTestEnds(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("user", func(t *testing.T) {
		u, err := url.Parse(pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		name = strings.TrimPrefix(u.Path, "/")
	})
	// Any database on the same server serves to look the dropped one up.
	probe := pgtest.NewEmptyDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, probe)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatalf("look up database: %v", err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", name)
	}
}
