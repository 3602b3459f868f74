-- +goose Up
CREATE TABLE tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       varchar(100) NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Until tenant management lands, every request belongs to this tenant.
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default');

CREATE TABLE portfolio_topics (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    topic_name varchar(200) NOT NULL,
    data_type  varchar(50) NOT NULL,
    partitions integer NOT NULL DEFAULT 1 CHECK (partitions BETWEEN 1 AND 128),
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, topic_name)
);

CREATE TABLE portfolio_subscriptions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    subscription_id     varchar(100) NOT NULL,
    topic_name          varchar(200) NOT NULL,
    subscriber_workflow varchar(100) NOT NULL,
    filters             jsonb,
    status              varchar(20) NOT NULL DEFAULT 'active',
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, subscription_id),
    -- A topic cannot be deleted while a subscription still reads it.
    FOREIGN KEY (tenant_id, topic_name) REFERENCES portfolio_topics (tenant_id, topic_name)
);

CREATE INDEX portfolio_subscriptions_topic ON portfolio_subscriptions (tenant_id, topic_name);

-- config_outbox holds replicated-config commands committed with the admin write that caused them. The raft
-- leader applies them in id order; writers take an advisory lock so ids commit in the order they are issued.
CREATE TABLE config_outbox (
    id         bigserial PRIMARY KEY,
    command    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE config_outbox;
DROP TABLE portfolio_subscriptions;
DROP TABLE portfolio_topics;
DROP TABLE tenants;
