-- CRL building pages through revoked certificates in serial order; without
-- this index that walk visits every certificate, revoked or not.
CREATE INDEX certificates_revoked_by_serial ON certificates (serial) WHERE revoked_at IS NOT NULL;
