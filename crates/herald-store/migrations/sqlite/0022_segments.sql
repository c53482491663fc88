-- Segments (docs/SEGMENTS.md): a list whose members are the organisation's contacts that
-- match its filter, counted live and frozen into messages when a campaign starts. The
-- filter is the canonical text of `herald_core::contact_filter`; NULL for a list whose
-- members are added one by one.
ALTER TABLE lists ADD COLUMN filter TEXT;
