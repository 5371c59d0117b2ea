-- API keys: only a SHA-256 of each key is stored (the plaintext is shown once, at creation).
-- Keys are 256-bit random secrets, so a fast hash is enough: there is nothing to brute-force,
-- and a slow KDF (argon2) would add tens of milliseconds to every request for no gain.

CREATE TABLE IF NOT EXISTS api_keys (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    role          text NOT NULL CHECK (role IN ('viewer', 'duty', 'admin')),
    key_hash      text NOT NULL UNIQUE,
    prefix        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
