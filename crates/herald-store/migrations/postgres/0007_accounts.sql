-- Accounts and the HTTP API's bookkeeping: users (argon2id PHC strings), API keys and
-- sessions (only SHA-256 digests of the secrets are stored), login failure windows (rate
-- limits shared by every instance), idempotency keys (the first response to a key is kept
-- and replayed), and one-time flags such as the first owner's creation.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    org_id        BIGINT  NOT NULL REFERENCES organisations(id),
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('owner','admin','editor','viewer')),
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX users_org ON users (org_id, id);

CREATE TABLE api_keys (
    id           BIGSERIAL PRIMARY KEY,
    org_id       BIGINT  NOT NULL REFERENCES organisations(id),
    name         TEXT    NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('owner','admin','editor','viewer')),
    prefix       TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL UNIQUE,
    created_by   TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id, id);

CREATE TABLE sessions (
    id         BIGSERIAL PRIMARY KEY,
    token_hash TEXT    NOT NULL UNIQUE,
    user_id    BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    address    TEXT,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE login_failures (
    scope        TEXT    PRIMARY KEY,
    window_start BIGINT  NOT NULL,
    failures     BIGINT  NOT NULL
);

CREATE TABLE idempotency_keys (
    org_id       BIGINT  NOT NULL REFERENCES organisations(id),
    idem_key     TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    status_code  BIGINT,
    content_type TEXT,
    location     TEXT,
    body         TEXT,
    created_at   BIGINT  NOT NULL,
    PRIMARY KEY (org_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE herald_flags (
    name TEXT    PRIMARY KEY,
    at   BIGINT  NOT NULL
);
