package store

import (
	"context"
	"fmt"
	"math"

	"github.com/pds-platform/pds/db/sqlcdb"
)

// OutboxEntry is one committed replicated-config command.
type OutboxEntry struct {
	ID uint64
	// Command is framed by configfsm.EncodeCommand and carries ID as its outbox_id.
	Command []byte
}

// ListOutboxAfter returns up to limit entries with an id above afterID, in id order. Ids have gaps (a
// rolled-back write consumes one), but an entry never appears later below an id already returned, so the
// raft leader can resume from the last id it applied.
func (s *Store) ListOutboxAfter(ctx context.Context, afterID uint64, limit int) ([]OutboxEntry, error) {
	if limit <= 0 || limit > math.MaxInt32 {
		return nil, fmt.Errorf("list outbox after %d: limit %d out of range 1..%d", afterID, limit, math.MaxInt32)
	}
	if afterID > math.MaxInt64 {
		return nil, fmt.Errorf("list outbox after %d: id out of range", afterID)
	}
	rows, err := s.queries.ListOutboxAfter(ctx, sqlcdb.ListOutboxAfterParams{ID: int64(afterID), Limit: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list outbox after %d: %w", afterID, err)
	}
	entries := make([]OutboxEntry, len(rows))
	for i, row := range rows {
		entries[i] = OutboxEntry{ID: uint64(row.ID), Command: row.Command}
	}
	return entries, nil
}

// PruneOutbox deletes the entries with an id up to and including upToID (those the replicated config has
// durably applied) and returns how many it deleted.
func (s *Store) PruneOutbox(ctx context.Context, upToID uint64) (int64, error) {
	if upToID > math.MaxInt64 {
		return 0, fmt.Errorf("prune outbox up to %d: id out of range", upToID)
	}
	n, err := s.queries.DeleteOutboxUpTo(ctx, int64(upToID))
	if err != nil {
		return 0, fmt.Errorf("prune outbox up to %d: %w", upToID, err)
	}
	return n, nil
}
