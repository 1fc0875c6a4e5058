-- API tokens may expire (DESIGN §3): unix seconds, NULL for a token that never does.
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
