-- Conversations of the Responses API (issue 16). A conversation is a list of
-- items (messages, tool calls and their outputs, compactions), each kept as
-- its JSON text. Items are numbered in the order they were appended: seq comes
-- from the conversation's own counter (next_seq), raised by the same statement
-- that locks the conversation's row for the appending transaction, so two
-- responses appending at once never take the same numbers and neither loses
-- the other's items. Item ids are not unique in a conversation (a client may
-- send an item again with its id); reads by id take the newest.
-- Conversations expire like responses (expires_at, pushed back by every
-- change); reads skip expired ones and a purge deletes them, their items with
-- them.

-- +goose Up
CREATE TABLE conversations (
    id         TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    metadata   TEXT   NOT NULL DEFAULT '{}',
    next_seq   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The purge's scan.
CREATE INDEX conversations_expires_at ON conversations (expires_at);
-- Deleting a user's conversations with the user.
CREATE INDEX conversations_user ON conversations (user_id);

CREATE TABLE conversation_items (
    conversation_id TEXT   NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    id              TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

-- An item by id (GET and DELETE .../items/{item_id}, and the after cursor).
CREATE INDEX conversation_items_id ON conversation_items (conversation_id, id);

-- +goose Down
DROP TABLE conversation_items;
DROP TABLE conversations;
