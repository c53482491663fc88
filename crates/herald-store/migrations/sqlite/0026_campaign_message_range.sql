-- The ids of a campaign's messages: its start inserts them all in one statement, so they
-- lie in [first_message_id, last_message_id] (ids of another campaign started at the same
-- time may lie there too; the reads filter by campaign). The export's pages and the API's
-- message list walk that range of the primary key. This replaces the index on
-- ((campaign_id + 0), id) from 0017: it was written at every status change of every message
-- (one of about a dozen index entries a send wrote on PostgreSQL, where an update that
-- moves the status is never HOT), to serve reads that the primary key serves as well.
-- Null until the campaign starts, and on campaigns with no message.
ALTER TABLE campaigns ADD COLUMN first_message_id BIGINT;
ALTER TABLE campaigns ADD COLUMN last_message_id BIGINT;
-- Campaigns started before this migration: read off the old index while it is still here
-- (two index probes per campaign).
UPDATE campaigns SET
    first_message_id = (SELECT min(m.id) FROM messages m WHERE (m.campaign_id + 0) = campaigns.id),
    last_message_id = (SELECT max(m.id) FROM messages m WHERE (m.campaign_id + 0) = campaigns.id);
DROP INDEX messages_campaign_export;
