-- The schema is written once for both SQLite and PostgreSQL, so it sticks to
-- types and syntax the two share: TEXT ids, BIGINT counters, and every instant
-- stored as BIGINT unix milliseconds (UTC by construction, compares as a number
-- on both engines, and needs no driver-specific time handling).

-- +goose Up
CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    -- Always written lower-cased by the store, so a plain UNIQUE constraint
    -- gives case-insensitive uniqueness on both engines.
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL DEFAULT '',
    tier          TEXT    NOT NULL DEFAULT 'free',
    role          TEXT    NOT NULL DEFAULT 'user',
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT   PRIMARY KEY,
    user_id      TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT   NOT NULL DEFAULT '',
    -- Only a hash of the key is kept; lookups on every request go through it.
    hash         TEXT   NOT NULL UNIQUE,
    prefix       TEXT   NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE INDEX api_keys_user_created ON api_keys (user_id, created_at);
-- Replicas poll for recent revocations; most rows have revoked_at NULL.
CREATE INDEX api_keys_revoked_at ON api_keys (revoked_at);

CREATE TABLE usage_records (
    user_id           TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Empty when the request was authenticated by a token rather than a key.
    key_id            TEXT   NOT NULL DEFAULT '',
    model             TEXT   NOT NULL,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    at                BIGINT NOT NULL,
    request_id        TEXT   NOT NULL DEFAULT ''
);

-- Every read of usage is "this user, this time range".
CREATE INDEX usage_records_user_at ON usage_records (user_id, at);

-- +goose Down
DROP TABLE usage_records;
DROP TABLE api_keys;
DROP TABLE users;
