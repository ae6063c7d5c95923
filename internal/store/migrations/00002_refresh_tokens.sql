-- Refresh tokens and their families (issue 7). A family starts at a login; each
-- refresh replaces its token with the next one in the same family. Presenting a
-- token that was already replaced means it leaked (or a client raced itself),
-- and the whole family is revoked.

-- +goose Up
CREATE TABLE refresh_families (
    id         TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    -- Set once, at logout or on reuse of a replaced token; never cleared.
    revoked_at BIGINT
);

CREATE INDEX refresh_families_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    -- Only a SHA-256 of the token is kept: it has 256 random bits, so a fast
    -- hash leaves nothing to guess, and a stolen table holds no usable token.
    hash       TEXT   PRIMARY KEY,
    family_id  TEXT   NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- Set when the token was exchanged for its successor.
    used_at    BIGINT
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- +goose Down
DROP TABLE refresh_tokens;
DROP TABLE refresh_families;
