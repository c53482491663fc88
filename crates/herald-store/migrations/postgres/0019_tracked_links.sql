-- Tracked links (docs/CAMPAIGNS.md, "Link tracking"): the targets of a campaign's
-- link("…") calls, written when it starts (its body cannot change after that), with their
-- counted clicks: every click, and how many messages clicked the link at least once.
CREATE TABLE campaign_links (
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    position    BIGINT NOT NULL CHECK (position BETWEEN 1 AND 20),
    url         TEXT NOT NULL,
    clicks      BIGINT NOT NULL DEFAULT 0,
    clicked     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, position)
);
-- Each message's counted clicks on each of its links: when the first came, the last, and
-- how many. Its first row for a link is what makes the link's `clicked` count it once.
CREATE TABLE message_clicks (
    message_id  BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    first_at    BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    clicks      BIGINT NOT NULL,
    PRIMARY KEY (message_id, position)
);
-- The message's clicks over all its links and the first one's time, for the export and
-- the message list; the campaign's clicks and how many of its messages were clicked, for
-- its page and stats. Written in the transaction that records the click.
ALTER TABLE messages ADD COLUMN clicks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN first_clicked_at BIGINT;
ALTER TABLE campaigns ADD COLUMN clicks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN clicked BIGINT NOT NULL DEFAULT 0;
