-- A campaign's email parts (docs/EMAIL.md): JSON {"subject", "html", "from_name",
-- "reply_to"}, each a template, or null when an SMTP campaign sends its body as plain text
-- (its first line the subject). Copied by duplicates and resends.
ALTER TABLE campaigns ADD COLUMN email TEXT;
