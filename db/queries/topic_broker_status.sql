-- name: UpsertTopicBrokerStatus :execrows
-- Records one node's report for a topic. The report names the topic by tenant, name and id; when the id
-- no longer matches (the topic was deleted, or deleted and recreated) no row is written and 0 is returned.
INSERT INTO topic_broker_status (topic_id, tenant_id, node_id, state, message, partitions, updated_at)
SELECT t.id, t.tenant_id, @node_id, @state, @message, @partitions, now()
FROM portfolio_topics t
WHERE t.id = @topic_id AND t.tenant_id = @tenant_id AND t.topic_name = @topic_name
ON CONFLICT (topic_id, node_id) DO UPDATE
SET state = EXCLUDED.state, message = EXCLUDED.message, partitions = EXCLUDED.partitions, updated_at = EXCLUDED.updated_at;

-- name: ListTopicBrokerStatusOfTenant :many
SELECT * FROM topic_broker_status WHERE tenant_id = $1 ORDER BY topic_id, node_id;

-- name: ListTopicBrokerStatusOfTopic :many
SELECT * FROM topic_broker_status WHERE topic_id = $1 ORDER BY node_id;

-- name: DeleteTopicBrokerStatusOfNode :execrows
DELETE FROM topic_broker_status WHERE node_id = $1;
