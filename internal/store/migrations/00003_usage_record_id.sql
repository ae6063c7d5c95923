-- Usage records get an id chosen when the call ends, unique when set. A batch
-- of records whose write failed in a way that leaves its outcome unknown (the
-- connection broke after COMMIT was sent, so the server may have stored it)
-- can then be written again without counting a call twice. Rows from before
-- this migration, and records written without an id, have none (NULL), which
-- the unique index does not compare.

-- +goose Up
ALTER TABLE usage_records ADD COLUMN record_id TEXT;

CREATE UNIQUE INDEX usage_records_record_id ON usage_records (record_id);

-- +goose Down
DROP INDEX usage_records_record_id;

ALTER TABLE usage_records DROP COLUMN record_id;
