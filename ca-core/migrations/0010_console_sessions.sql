-- Operator console sessions (GET /ui/…). The browser holds a random secret in
-- an HttpOnly cookie; only its SHA-256 is stored, so a read of the database
-- gives no session. `credential` is the audit actor that signed in
-- (`token:<id>` or `cert:<serial>`): every request re-checks that credential
-- (a revoked or expired token ends its sessions on every replica at once).
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_credential ON console_sessions (credential, created_at);
