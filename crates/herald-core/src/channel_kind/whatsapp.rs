//! The WhatsApp Cloud API (Meta's Graph API). Its channel is
//! crates/herald-channels/src/channels/whatsapp.rs; its webhooks are served by
//! crates/herald-api/src/webhooks/inbound.rs.

use super::{ChannelKind, ChannelKindDescriptor, Field, InDoubtWait, Input, WebhookRoute};
use crate::address::AddressKind;

pub const NAME: &str = "whatsapp";

pub const KIND: ChannelKind = ChannelKind(&DESCRIPTOR);

/// The app's one webhook: the verification handshake (GET) and every event (POST).
pub const EVENTS: WebhookRoute = WebhookRoute {
    suffix: "",
    recorded_as: NAME,
    label: "Callback URL",
    hint: "The app's WhatsApp webhook configuration, with the channel's verify token; subscribe to the messages field",
};

/// How long a WhatsApp message in doubt waits for a status webhook carrying its id
/// (`biz_opaque_callback_data`) before the in-doubt policy decides: WhatsApp cannot be
/// asked, but it tells.
pub const IN_DOUBT_GRACE_MS: i64 = 60_000;

pub const DESCRIPTOR: ChannelKindDescriptor = ChannelKindDescriptor {
    name: NAME,
    label: "WhatsApp Cloud API",
    address: Some(AddressKind::Phone),
    sms_segments: false,
    fields: &[
        Field::new("phone_number_id", "Phone number ID", Input::Text).required(),
        Field::new("access_token", "Access token", Input::Secret)
            .hint("Stored encrypted; never shown again.")
            .required(),
        Field::new("app_secret", "App secret", Input::Secret)
            .hint("Checks webhook signatures.")
            .required(),
        Field::new("verify_token", "Webhook verify token", Input::Secret).required(),
        Field::new("template", "Template name", Input::Text),
        Field::new("template_language", "Template language", Input::Text).hint("e.g. en_US"),
        Field::new(
            "business_account_id",
            "WhatsApp Business Account ID",
            Input::Text,
        )
        .hint("Lets Herald check a campaign's template with Meta when it is created."),
        Field::new("api_version", "Graph API version", Input::Text).hint("e.g. v21.0"),
        Field::new("base_url", "API base URL", Input::Text)
            .hint("Only to point at a test double.")
            .endpoint(),
    ],
    in_doubt_wait: InDoubtWait::ForWebhook {
        ms: IN_DOUBT_GRACE_MS,
    },
    webhooks: &[EVENTS],
};
