-- The CRL revision (crl_state.revision of the certificate's issuer) at which
-- a certificate was revoked, set in the revoking transaction. A publisher
-- that keeps the encoded revoked-entry list reads only the entries revoked
-- since the revision it last published, instead of every revoked row.
-- Certificates revoked before this migration keep NULL: a publisher reads
-- them in its full build at start-up.
ALTER TABLE certificates ADD COLUMN revoked_rev BIGINT;
CREATE INDEX certificates_by_revoked_rev ON certificates (issuer, revoked_rev)
    WHERE revoked_rev IS NOT NULL;
