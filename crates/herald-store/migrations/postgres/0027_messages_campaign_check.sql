-- A campaign's start writes all its messages in one INSERT … SELECT. The foreign key from
-- messages.campaign_id checked them one row at a time: a queued trigger event and a lookup
-- of the campaign per row, 35 % of that insert's time on 60,000 rows (BENCHMARKS.md, "A
-- start without the per-row foreign-key check"). The same guarantees, kept in the database
-- and paid once per statement:
--   * inserted messages name campaigns that exist, locked FOR KEY SHARE until the
--     transaction ends (as the foreign key's check locks them), so a delete of one waits;
--   * deleting a campaign deletes its messages (the cascade);
--   * a message's campaign_id never changes (the foreign key would have re-checked it).
-- SQLite keeps its foreign key: its start is not slowed by it in the same way.
ALTER TABLE messages DROP CONSTRAINT messages_campaign_id_fkey;

CREATE FUNCTION herald_messages_campaigns_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Lock first, then look: a campaign deleted meanwhile is not locked, and is then seen
    -- to be missing by the next statement's snapshot.
    PERFORM 1 FROM campaigns c
        WHERE c.id IN (SELECT DISTINCT campaign_id FROM inserted_messages)
        FOR KEY SHARE;
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT campaign_id FROM inserted_messages) i
               WHERE NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = i.campaign_id)) THEN
        RAISE EXCEPTION 'insert into messages names a campaign that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_campaigns_exist AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted_messages
    FOR EACH STATEMENT EXECUTE FUNCTION herald_messages_campaigns_exist();

CREATE FUNCTION herald_campaign_id_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a message''s campaign_id cannot change (message %)', OLD.id
        USING ERRCODE = 'foreign_key_violation';
END $$;
CREATE TRIGGER messages_campaign_id_fixed BEFORE UPDATE OF campaign_id ON messages
    FOR EACH ROW WHEN (NEW.campaign_id IS DISTINCT FROM OLD.campaign_id)
    EXECUTE FUNCTION herald_campaign_id_fixed();

CREATE FUNCTION herald_campaign_deletes_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM messages WHERE campaign_id = OLD.id;
    RETURN OLD;
END $$;
CREATE TRIGGER campaigns_delete_messages BEFORE DELETE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION herald_campaign_deletes_messages();
