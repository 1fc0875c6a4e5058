-- API tokens: only a SHA-256 of the secret part is stored.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Idempotency-Key records for reissue: the same key and request within 24 h
-- never issues or revokes twice. No bundle or password is kept.
CREATE TABLE idempotency_keys (
    idem_key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    serial TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Bumped by every transaction that revokes, so CRL publishers in any process
-- can tell cheaply whether the published CRL is stale.
ALTER TABLE crl_state ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE crl_state ADD COLUMN published_revision BIGINT NOT NULL DEFAULT 0;
