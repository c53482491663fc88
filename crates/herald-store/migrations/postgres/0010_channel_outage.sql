-- A channel whose provider is down is `unavailable` for every instance: since when and why.
-- One instance at a time probes it: the probe's owner and until when its claim holds.
ALTER TABLE channels ADD COLUMN unavailable_since BIGINT;
ALTER TABLE channels ADD COLUMN unavailable_reason TEXT;
ALTER TABLE channels ADD COLUMN probe_owner TEXT;
ALTER TABLE channels ADD COLUMN probe_until BIGINT;
-- A campaign the engine paused because its channel became unavailable names that channel,
-- so the probe resumes it when the provider answers again; a person's pause leaves it NULL
-- and is never undone by the engine. Any person's transition clears it.
ALTER TABLE campaigns ADD COLUMN outage_channel_id BIGINT;
CREATE INDEX campaigns_outage_channel ON campaigns (outage_channel_id) WHERE outage_channel_id IS NOT NULL;
