-- API keys of the HTTP server. Only a SHA-256 digest of each secret is kept;
-- `prefix` is the secret's first characters, to recognise a key in a list.
-- A revoked key stays (revoked_at set) so its id remains known.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    customer_id TEXT,
    digest      TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
