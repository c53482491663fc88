-- Tracked links (docs/CAMPAIGNS.md, "Link tracking"): the targets of a campaign's
-- link("…") calls, written when it starts (its body cannot change after that), with their
-- counted clicks: every click, and how many messages clicked the link at least once.
CREATE TABLE campaign_links (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL CHECK (position BETWEEN 1 AND 20),
    url         TEXT NOT NULL,
    clicks      INTEGER NOT NULL DEFAULT 0,
    clicked     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, position)
);
-- Each message's counted clicks on each of its links: when the first came, the last, and
-- how many. Its first row for a link is what makes the link's `clicked` count it once.
CREATE TABLE message_clicks (
    message_id  INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    clicks      INTEGER NOT NULL,
    PRIMARY KEY (message_id, position)
);
-- The message's clicks over all its links and the first one's time, for the export and
-- the message list; the campaign's clicks and how many of its messages were clicked, for
-- its page and stats. Written in the transaction that records the click.
ALTER TABLE messages ADD COLUMN clicks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN first_clicked_at INTEGER;
ALTER TABLE campaigns ADD COLUMN clicks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN clicked INTEGER NOT NULL DEFAULT 0;
