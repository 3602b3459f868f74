// Package store is the control plane's PostgreSQL command store: topics and subscriptions as pdsv1
// messages, each change committed together with the replicated-config command that carries it (the
// outbox), which the raft leader applies in id order.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pds-platform/pds/db/sqlcdb"
)

// Errors returned by Store methods, always wrapped with the operation; test with errors.Is.
var (
	// ErrNotFound: the topic or subscription does not exist for the tenant.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a topic name or subscription_id is already taken within the tenant.
	ErrAlreadyExists = errors.New("already exists")
	// ErrTopicInUse: the topic cannot be deleted while subscriptions read it.
	ErrTopicInUse = errors.New("topic still has subscriptions")
	// ErrTopicMissing: a subscription names a topic the tenant does not have.
	ErrTopicMissing = errors.New("topic does not exist")
	// ErrPartitionsShrink: an update asked for fewer partitions than the topic has; see PartitionsShrinkError.
	ErrPartitionsShrink = errors.New("partitions cannot shrink")
)

// PartitionsShrinkError reports the current partition count an update tried to go below. It matches
// ErrPartitionsShrink with errors.Is.
type PartitionsShrinkError struct {
	Current, Requested int32
}

func (e *PartitionsShrinkError) Error() string {
	return fmt.Sprintf("partitions cannot shrink from %d to %d", e.Current, e.Requested)
}

// Is makes errors.Is(err, ErrPartitionsShrink) hold.
func (e *PartitionsShrinkError) Is(target error) bool { return target == ErrPartitionsShrink }

// PostgreSQL error codes the store turns into domain errors.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// Store reads and writes the control plane's tables. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	queries *sqlcdb.Queries
}

// Open connects a pool to databaseURL and checks that the server answers. The schema must already be
// migrated (db.Migrate).
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store: ping database: %w", err)
	}
	return &Store{pool: pool, queries: sqlcdb.New(pool)}, nil
}

// Close closes the pool, waiting for connections in use to be released.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	return nil
}

// change is one row change inside a write transaction. It gets the outbox id its command must carry and
// returns that command, already encoded with configfsm.EncodeCommand.
type change func(ctx context.Context, q *sqlcdb.Queries, outboxID uint64) (command []byte, err error)

// write runs fn in one transaction together with its outbox row, and returns that row's id.
//
// The outbox advisory lock is taken before the id, and held until commit, so outbox ids commit in
// increasing order: a reader that has seen id N will never later see a new row below N. A failed change
// rolls back and leaves a gap in the ids, which readers skip.
func (s *Store) write(ctx context.Context, fn change) (uint64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	// Rollback after Commit is a no-op.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	q := s.queries.WithTx(tx)

	if err := q.LockOutbox(ctx); err != nil {
		return 0, fmt.Errorf("lock outbox: %w", err)
	}
	id, err := q.NextOutboxID(ctx)
	if err != nil {
		return 0, fmt.Errorf("next outbox id: %w", err)
	}
	command, err := fn(ctx, q, uint64(id))
	if err != nil {
		return 0, err
	}
	if err := q.InsertOutbox(ctx, sqlcdb.InsertOutboxParams{ID: id, Command: command}); err != nil {
		return 0, fmt.Errorf("insert outbox row %d: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return uint64(id), nil
}

// classify maps PostgreSQL errors to the store's errors; onForeignKey is what a foreign-key violation
// means for the statement at hand.
func classify(err error, onForeignKey error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgUniqueViolation:
			return ErrAlreadyExists
		case pgForeignKeyViolation:
			if onForeignKey != nil {
				return onForeignKey
			}
		}
	}
	return err
}

func parseTenant(tenantID string) (pgtype.UUID, error) {
	var id pgtype.UUID
	if err := id.Scan(tenantID); err != nil {
		return id, fmt.Errorf("tenant id %q: %w", tenantID, err)
	}
	return id, nil
}
