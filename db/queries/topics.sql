-- name: CreateTopic :one
INSERT INTO portfolio_topics (tenant_id, topic_name, data_type, partitions, enabled)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: GetTopic :one
SELECT * FROM portfolio_topics WHERE tenant_id = $1 AND topic_name = $2;

-- name: ListTopics :many
SELECT * FROM portfolio_topics WHERE tenant_id = $1 ORDER BY topic_name;

-- name: UpdateTopic :one
UPDATE portfolio_topics SET data_type = $3, partitions = $4
WHERE tenant_id = $1 AND topic_name = $2
RETURNING *;

-- name: SetTopicEnabled :one
UPDATE portfolio_topics SET enabled = $3
WHERE tenant_id = $1 AND topic_name = $2
RETURNING *;

-- name: DeleteTopic :execrows
DELETE FROM portfolio_topics WHERE tenant_id = $1 AND topic_name = $2;

-- name: CountTopicSubscriptions :one
SELECT count(*) FROM portfolio_subscriptions WHERE tenant_id = $1 AND topic_name = $2;

-- name: GetTopicForUpdate :one
-- Locks the row so a concurrent update cannot slip between the partition check and the write.
SELECT * FROM portfolio_topics WHERE tenant_id = $1 AND topic_name = $2 FOR UPDATE;
