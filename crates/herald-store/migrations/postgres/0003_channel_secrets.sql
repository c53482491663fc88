-- Provider credentials, sealed with the configured secret_key (see src/secrets.rs). Never
-- stored in `config`, which is shown to operators.
ALTER TABLE channels ADD COLUMN secrets TEXT;
