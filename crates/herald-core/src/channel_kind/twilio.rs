//! Twilio Programmable Messaging: SMS, or WhatsApp through Twilio. Its channel is
//! crates/herald-channels/src/channels/twilio.rs; its webhooks are served by
//! crates/herald-api/src/webhooks/inbound.rs.

use super::{ChannelKind, ChannelKindDescriptor, Field, InDoubtWait, Input, WebhookRoute};
use crate::address::AddressKind;

pub const NAME: &str = "twilio";

pub const KIND: ChannelKind = ChannelKind(&DESCRIPTOR);

/// The setting that sends over WhatsApp through Twilio (`whatsapp:` addresses).
pub const WHATSAPP_SETTING: &str = "whatsapp";

/// The `StatusCallback` Herald sends with every message.
pub const STATUS_CALLBACK: WebhookRoute = WebhookRoute {
    suffix: "/status",
    recorded_as: "twilio-status",
    label: "Status callback",
    hint: "Herald sends it with every message as StatusCallback; paste it in the Messaging Service's status callback only if your account overrides it",
};

/// Messages people send to the channel's number (STOP and the like).
pub const INBOUND: WebhookRoute = WebhookRoute {
    suffix: "/inbound",
    recorded_as: "twilio-inbound",
    label: "Inbound messages",
    hint: "The phone number's (or Messaging Service's) “A message comes in” webhook, HTTP POST: replies such as STOP reach Herald here",
};

pub const DESCRIPTOR: ChannelKindDescriptor = ChannelKindDescriptor {
    name: NAME,
    label: "Twilio (SMS, or WhatsApp through Twilio)",
    address: Some(AddressKind::Phone),
    sms_segments: true,
    fields: &[
        Field::new("account_sid", "Account SID", Input::Text).required(),
        Field::new("auth_token", "Auth token", Input::Secret)
            .hint("Stored encrypted; never shown again.")
            .required(),
        Field::new("from", "From number", Input::Text)
            .hint("E.164, e.g. +15551234567; or give a messaging service SID instead."),
        Field::new(
            "messaging_service_sid",
            "Messaging service SID",
            Input::Text,
        ),
        Field::new("content_sid", "Content SID", Input::Text).hint("For WhatsApp templates."),
        Field::new(WHATSAPP_SETTING, "Send over WhatsApp", Input::Checkbox),
        Field::new("base_url", "API base URL", Input::Text)
            .hint("Only to point at a test double.")
            .endpoint(),
    ],
    // Twilio's message list filters on the date a message was sent: one still queued at
    // Twilio is not found yet.
    in_doubt_wait: InDoubtWait::ProviderLookupDelay,
    webhooks: &[STATUS_CALLBACK, INBOUND],
};
