-- The sandbox provider records what it accepted with retries when the database is
-- restarting; a retried batch whose first commit did land must not count twice.
CREATE UNIQUE INDEX sandbox_received_provider ON sandbox_received (provider_id);
