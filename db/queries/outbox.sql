-- name: LockOutbox :exec
-- Serialises outbox writers until their transaction ends, so that ids become visible in the order they
-- were issued and the raft leader never skips a row that commits later with a smaller id.
SELECT pg_advisory_xact_lock(7001);

-- name: NextOutboxID :one
-- Taken after LockOutbox: the command stored in the row embeds its own id.
SELECT nextval(pg_get_serial_sequence('config_outbox', 'id'))::bigint AS id;

-- name: InsertOutbox :exec
INSERT INTO config_outbox (id, command) VALUES ($1, $2);

-- name: ListOutboxAfter :many
SELECT id, command FROM config_outbox WHERE id > $1 ORDER BY id LIMIT $2;

-- name: DeleteOutboxUpTo :execrows
DELETE FROM config_outbox WHERE id <= $1;
