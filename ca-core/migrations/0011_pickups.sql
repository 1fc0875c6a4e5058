-- One-time pickup of bundles (DESIGN §1, §3, §7). A pickup holds one PKCS#12
-- bundle and its password, sealed with AES-256-GCM under a key that scrypt
-- derives from a one-time code the server never stores: only the salt, the
-- nonce, the ciphertext and a SHA-256 of a second scrypt output (to tell a
-- wrong code from a right one) are kept. Collection, expiry, lock-out or
-- replacement set the sealed columns to NULL in the transaction that records
-- the event.
CREATE TABLE pickups (
    id TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    tenant TEXT NOT NULL,
    admin TEXT NOT NULL,
    policy TEXT NOT NULL,
    email TEXT,
    -- 0 waiting, 1 collected, 2 expired, 3 locked, 4 replaced
    state BIGINT NOT NULL,
    salt BYTEA,
    nonce BYTEA,
    sealed BYTEA,
    code_hash BYTEA NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    -- Creation time in microseconds: orders pickups made within one second.
    ordinal BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    closed_at BIGINT,
    -- 0 no mail (no address or no smtp.url), 1 to send, 2 sent, 3 failed
    mail_state BIGINT NOT NULL DEFAULT 0,
    mail_error TEXT
);
CREATE INDEX pickups_by_admin ON pickups (tenant, admin, policy, state);
CREATE INDEX pickups_by_serial ON pickups (serial);
CREATE INDEX pickups_by_state ON pickups (state, expires_at);
CREATE INDEX pickups_by_ordinal ON pickups (ordinal);

-- Expiry reminders already sent: one row per certificate, so each reminder
-- goes out once however many servers run the reminder task.
CREATE TABLE reminders (
    serial TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
