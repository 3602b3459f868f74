-- name: LockOutbox :exec
-- Serialises outbox writers so that ids become visible in the order they were issued.
SELECT pg_advisory_xact_lock(7001);

-- name: InsertOutbox :one
INSERT INTO config_outbox (command) VALUES ($1) RETURNING id;

-- name: ListOutboxAfter :many
SELECT id, command FROM config_outbox WHERE id > $1 ORDER BY id LIMIT $2;

-- name: DeleteOutboxUpTo :execrows
DELETE FROM config_outbox WHERE id <= $1;
