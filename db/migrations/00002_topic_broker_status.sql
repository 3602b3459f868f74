-- +goose Up
-- topic_broker_status holds what each data-plane node's broker driver last did with a topic. It is an
-- observation, not configuration: it is written by ReportTopicStatus directly, never through the outbox,
-- and never replicated through raft. Rows of a deleted topic go with it; a recreated topic has a new id
-- and so starts with no rows (PENDING).
CREATE TABLE topic_broker_status (
    topic_id   uuid NOT NULL REFERENCES portfolio_topics (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    node_id    varchar(100) NOT NULL,
    state      varchar(20) NOT NULL CHECK (state IN ('BROKER_STATE_PENDING', 'BROKER_STATE_READY', 'BROKER_STATE_FAILED')),
    message    varchar(2000) NOT NULL DEFAULT '',
    partitions integer NOT NULL DEFAULT 0 CHECK (partitions BETWEEN 0 AND 128),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic_id, node_id)
);

CREATE INDEX topic_broker_status_tenant ON topic_broker_status (tenant_id);
CREATE INDEX topic_broker_status_node ON topic_broker_status (node_id);

-- +goose Down
DROP TABLE topic_broker_status;
