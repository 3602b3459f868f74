-- name: CreateSubscription :one
INSERT INTO portfolio_subscriptions (tenant_id, subscription_id, topic_name, subscriber_workflow, filters, status)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: GetSubscription :one
SELECT * FROM portfolio_subscriptions WHERE tenant_id = $1 AND subscription_id = $2;

-- name: ListSubscriptions :many
SELECT * FROM portfolio_subscriptions
WHERE tenant_id = $1 AND (sqlc.narg(topic_name)::varchar IS NULL OR topic_name = sqlc.narg(topic_name))
ORDER BY subscription_id;

-- name: UpdateSubscription :one
UPDATE portfolio_subscriptions SET subscriber_workflow = $3, filters = $4
WHERE tenant_id = $1 AND subscription_id = $2
RETURNING *;

-- name: SetSubscriptionStatus :one
UPDATE portfolio_subscriptions SET status = $3
WHERE tenant_id = $1 AND subscription_id = $2
RETURNING *;

-- name: DeleteSubscription :execrows
DELETE FROM portfolio_subscriptions WHERE tenant_id = $1 AND subscription_id = $2;
