-- A channel's price per billing unit (an SMS segment, or a message), optionally by
-- destination prefix, for the estimate before a campaign starts (docs/CAMPAIGNS.md):
-- JSON of pricing::Pricing, amounts in millionths of the currency unit. Null: no price.
ALTER TABLE channels ADD COLUMN pricing TEXT;
