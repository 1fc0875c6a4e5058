-- Trust hierarchy (DESIGN §2, §5): the CA is a set of issuers, one active.
-- Each issuer has a number (its crl_state row, and what certificates.issuer
-- names), a stable id (hex of its key identifier, used in URLs), its own CRL
-- numbers, and a key reference (a file name or a token key; no key material).
CREATE TABLE issuers (
    number BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    -- 0 pending (key and CSR, no certificate yet), 1 active, 2 retired
    state BIGINT NOT NULL,
    subject TEXT NOT NULL,
    key_ref TEXT NOT NULL,
    not_after BIGINT,
    der BYTEA,
    created_at BIGINT NOT NULL
);

-- Which issuer signed a certificate. Every certificate before this migration
-- was signed by the one CA there was: issuer 1.
ALTER TABLE certificates ADD COLUMN issuer BIGINT NOT NULL DEFAULT 1;

-- CRL building reads one issuer's revoked entries in serial order (see 0005).
DROP INDEX certificates_revoked_entries;
CREATE INDEX certificates_revoked_entries
    ON certificates (issuer, serial, revoked_at, reason, invalidity_date, not_after)
    WHERE revoked_at IS NOT NULL;

-- The published CRLs' DER, now one per issuer (numbers are per issuer, so the
-- issuer is part of the key).
CREATE TABLE crl_pieces (
    issuer BIGINT NOT NULL,
    number BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (issuer, number, idx)
);
INSERT INTO crl_pieces (issuer, number, idx, data)
    SELECT 1, number, idx, data FROM crl_der_chunks;
DROP TABLE crl_der_chunks;
