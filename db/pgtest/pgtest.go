// Package pgtest gives tests a real PostgreSQL database each.
//
// With PDS_TEST_DATABASE_URL set to an admin URL (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
// databases are created on that server. Otherwise the test process starts one private server of its own on
// first use, which pgtest.Main stops:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Tests asking for a database are skipped under -short.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pds-platform/pds/db"
)

// EnvAdminURL names the environment variable holding the URL of an existing server to use instead of a
// private one. The URL's user must be allowed to create and drop databases.
const EnvAdminURL = "PDS_TEST_DATABASE_URL"

// setupTimeout bounds creating, migrating or dropping one database.
const setupTimeout = time.Minute

var (
	mu         sync.Mutex
	mainCalled bool
	shared     *server
	sharedErr  error
)

// Main runs the tests, then stops the private server (if one was started) and removes its files, and exits
// with the tests' status. Call it from TestMain of every package that uses pgtest.
func Main(m *testing.M) {
	mu.Lock()
	mainCalled = true
	mu.Unlock()

	code := m.Run()

	mu.Lock()
	s := shared
	shared, sharedErr = nil, errors.New("pgtest: server already stopped")
	mu.Unlock()
	if s != nil {
		if err := s.stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// NewDatabase creates a fresh database with every migration applied and returns its URL. The database is
// dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	databaseURL := NewEmptyDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := db.Migrate(ctx, databaseURL); err != nil {
		t.Fatalf("pgtest: migrate new database: %v", err)
	}
	return databaseURL
}

// NewEmptyDatabase creates a fresh database without any migration applied and returns its URL. The
// database is dropped when the test ends.
func NewEmptyDatabase(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("pgtest: needs a PostgreSQL server; skipped under -short")
	}
	s, err := sharedServer()
	if err != nil {
		t.Fatal(err)
	}
	name, err := randomDatabaseName()
	if err != nil {
		t.Fatal(err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	if err := adminExec(s.adminURL, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// FORCE ends sessions a test left open, so a leaked pool cannot keep the database alive.
		if err := adminExec(s.adminURL, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	databaseURL, err := withDatabase(s.adminURL, name)
	if err != nil {
		t.Fatal(err)
	}
	return databaseURL
}

func sharedServer() (*server, error) {
	mu.Lock()
	defer mu.Unlock()
	if shared != nil || sharedErr != nil {
		return shared, sharedErr
	}
	if adminURL := os.Getenv(EnvAdminURL); adminURL != "" {
		shared = &server{adminURL: adminURL}
		return shared, nil
	}
	if !mainCalled {
		// Without Main nobody stops the private server or removes its files.
		return nil, errors.New("pgtest: call pgtest.Main(m) from TestMain, or set " + EnvAdminURL)
	}
	shared, sharedErr = startPrivateServer()
	return shared, sharedErr
}

func adminExec(adminURL, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return err
	}
	return nil
}

func randomDatabaseName() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pgtest: random database name: %w", err)
	}
	return "pds_test_" + hex.EncodeToString(b), nil
}

// withDatabase returns adminURL pointing at another database on the same server.
func withDatabase(adminURL, name string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("pgtest: %s must be a URL (postgres://user@host:port/db): %v", EnvAdminURL, err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
