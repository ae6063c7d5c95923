-- Stored responses of the Responses API (issue 15). One row per response:
-- the Response object as the client saw it (body) and the input items it was
-- given (input, a JSON array), both as JSON text. A response names the
-- response it continues (previous_response_id, '' for none); a chain is read
-- by following those links within one user's rows. There is no foreign key on
-- the link: the previous response may be deleted or purged while later ones
-- remain, and the chain then simply ends there. Rows expire (expires_at) and
-- a purge deletes them; every read also skips expired rows, so a purge that
-- runs late changes nothing a client sees.

-- +goose Up
CREATE TABLE responses (
    id                   TEXT   PRIMARY KEY,
    user_id              TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    previous_response_id TEXT   NOT NULL DEFAULT '',
    model                TEXT   NOT NULL DEFAULT '',
    status               TEXT   NOT NULL,
    body                 TEXT   NOT NULL,
    input                TEXT   NOT NULL,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL
);

-- The purge's scan.
CREATE INDEX responses_expires_at ON responses (expires_at);
-- Listing a user's responses, and deleting them with the user.
CREATE INDEX responses_user_created ON responses (user_id, created_at);

-- +goose Down
DROP TABLE responses;
