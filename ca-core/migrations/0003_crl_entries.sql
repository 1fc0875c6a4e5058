-- How many revoked certificates the published CRL lists (so nobody has to parse it to say).
ALTER TABLE crl_state ADD COLUMN entries BIGINT NOT NULL DEFAULT 0;
