-- Every usage record carries what its call cost, priced by the model
-- catalogue: an exact amount in picodollars (1e-12 USD). A catalogue price
-- has at most 6 decimal places per million tokens, so a token's cost is a
-- whole number of picodollars and sums stay exact on both engines (no
-- floating point, which SQLite would use for a decimal column). Records from
-- before the catalogue, or of models without a price, cost 0.

-- +goose Up
ALTER TABLE usage_records ADD COLUMN cost_picousd BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE usage_records DROP COLUMN cost_picousd;
