-- CRL building reads every revoked entry in serial order. With the entry's
-- fields in the index the walk never visits the table, whose rows carry each
-- certificate's DER (a 1M-entry CRL read ~1 GB of table pages without it).
DROP INDEX certificates_revoked_by_serial;
CREATE INDEX certificates_revoked_entries
    ON certificates (serial, revoked_at, reason, invalidity_date, not_after)
    WHERE revoked_at IS NOT NULL;

-- The published CRL's DER in pieces of 1 MiB rather than one value in
-- crl_state: a 50 MB value was copied several times over on its way into the
-- database, and rewriting the row read the previous one back in full.
CREATE TABLE crl_der_chunks (
    number BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (number, idx)
);
INSERT INTO crl_der_chunks (number, idx, data)
    SELECT published_number, 0, der FROM crl_state WHERE id = 1 AND der IS NOT NULL;
UPDATE crl_state SET der = NULL WHERE id = 1;
