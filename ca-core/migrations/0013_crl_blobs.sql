-- A published CRL's DER is stored as the pieces it is cut into (its headers,
-- runs of ~512 entries that end where a serial's low 9 bits are zero, its
-- extensions and signature), each once per issuer under its SHA-256, and the
-- CRL as the list of its pieces' hashes. Consecutive CRLs share every piece
-- but the few a revocation or an expiry touched, so publishing a CRL of a
-- million entries writes ~25 KB, not ~50 MB, and another replica reads back
-- only the pieces it does not hold yet. Pieces no published CRL lists are
-- deleted by the publish that drops them. The CRL that crl_pieces held
-- before this migration is still read from there until the next publish.
CREATE TABLE crl_blobs (
    issuer BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (issuer, hash)
);
CREATE TABLE crl_layouts (
    issuer BIGINT NOT NULL,
    number BIGINT NOT NULL,
    -- The pieces' SHA-256 hashes in order, 32 bytes each.
    hashes BYTEA NOT NULL,
    PRIMARY KEY (issuer, number)
);
