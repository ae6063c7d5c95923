-- The MCP registry (issues 17 and 18): the MCP servers an admin registered,
-- and one audit row per tool call made through agentapi.
--
-- mcp_servers.headers holds the registry's credentials for the server,
-- sealed by internal/mcp (AES-GCM under a key derived from SECRET_KEY); the
-- store never opens it. allowed_tools and tiers are JSON arrays of names,
-- NULL meaning "every tool" and "every tier".
--
-- mcp_calls keeps who called which tool of which server, when, for how long,
-- how it ended and how many bytes came back; never the arguments or the
-- result. There is no foreign key to users: the audit outlives an account.

-- +goose Up
CREATE TABLE mcp_servers (
    label            TEXT   PRIMARY KEY,
    url              TEXT   NOT NULL,
    description      TEXT   NOT NULL DEFAULT '',
    headers          TEXT   NOT NULL DEFAULT '',
    allowed_tools    TEXT,
    require_approval TEXT   NOT NULL DEFAULT 'always',
    tiers            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE mcp_calls (
    id           TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    key_id       TEXT   NOT NULL DEFAULT '',
    via          TEXT   NOT NULL DEFAULT '',
    server_label TEXT   NOT NULL,
    tool         TEXT   NOT NULL,
    started_at   BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    outcome      TEXT   NOT NULL,
    bytes        BIGINT NOT NULL DEFAULT 0
);

-- Admins list everyone's calls newest first; users their own.
CREATE INDEX mcp_calls_started ON mcp_calls (started_at);
CREATE INDEX mcp_calls_user_started ON mcp_calls (user_id, started_at);

-- +goose Down
DROP TABLE mcp_calls;
DROP TABLE mcp_servers;
