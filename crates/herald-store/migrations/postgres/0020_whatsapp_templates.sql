-- A campaign's WhatsApp template (docs/CAMPAIGNS.md, "WhatsApp templates"): JSON
-- {"name", "language", "parameters": [contact fields]}, or null when the campaign sends its
-- rendered body (or its channel's own template). Copied by duplicates and resends.
ALTER TABLE campaigns ADD COLUMN whatsapp_template TEXT;
