-- Send windows (docs/CAMPAIGNS.md, "Send windows"): the local times a campaign may send in,
-- `HH:MM-HH:MM[ ZONE]`. A campaign's own ('off': none), else its organisation's. A message
-- the window holds waits `queued` with no attempt spent; `held_until` is when its hold
-- ends, so a campaign shows how many wait and until when.
ALTER TABLE campaigns ADD COLUMN send_window TEXT;
ALTER TABLE organisations ADD COLUMN send_window TEXT;
ALTER TABLE messages ADD COLUMN held_until BIGINT;
