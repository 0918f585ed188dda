-- Every catalog document the server has served, in order: the catalog file at
-- a start where its content changed, or a catalog applied through the API
-- (`PUT /v1/catalog`). Which one a start serves is decided from these rows
-- (docs/catalog.md "Applying a catalog to a running server"). Rows are never
-- changed or deleted.

CREATE TABLE catalog_documents (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT NOT NULL CHECK (source IN ('file', 'api')),
    name        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    document    TEXT NOT NULL,
    applied_at  BIGINT NOT NULL
);
