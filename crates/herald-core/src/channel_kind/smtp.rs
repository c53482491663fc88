//! Email over SMTP. Its channel is crates/herald-channels/src/channels/smtp.rs; its
//! bounce and complaint webhooks are served by crates/herald-api/src/webhooks/email.rs
//! (docs/EMAIL.md).

use super::{ChannelKind, ChannelKindDescriptor, Field, InDoubtWait, Input, WebhookRoute};
use crate::address::AddressKind;

pub const NAME: &str = "smtp";

pub const KIND: ChannelKind = ChannelKind(&DESCRIPTOR);

/// Amazon SES bounces, complaints and deliveries, through an Amazon SNS topic.
pub const SES: WebhookRoute = WebhookRoute {
    suffix: "/ses",
    recorded_as: "ses-notification",
    label: "Amazon SES (through SNS)",
    hint: "Subscribe this HTTPS endpoint to the SNS topic the SES identity sends bounce, complaint and delivery notifications to, turn on \"Include original email headers\" for them (so a report names its message), and give the channel that topic's ARN; Herald confirms the subscription itself",
};

/// Postmark's bounce, spam complaint and delivery webhooks.
pub const POSTMARK: WebhookRoute = WebhookRoute {
    suffix: "/postmark",
    recorded_as: "postmark-webhook",
    label: "Postmark",
    hint: "The server's Bounce, Spam Complaint and Delivery webhook URL, with basic auth: any user name, the channel's Postmark webhook token as the password",
};

/// SendGrid's signed Event Webhook.
pub const SENDGRID: WebhookRoute = WebhookRoute {
    suffix: "/sendgrid",
    recorded_as: "sendgrid-events",
    label: "SendGrid Event Webhook",
    hint: "The Event Webhook's HTTP POST URL, with Signed Event Webhook on; give the channel the verification key SendGrid shows",
};

pub const DESCRIPTOR: ChannelKindDescriptor = ChannelKindDescriptor {
    name: NAME,
    label: "Email over SMTP",
    address: Some(AddressKind::Email),
    sms_segments: false,
    fields: &[
        Field::new("host", "SMTP host", Input::Text)
            .required()
            .endpoint(),
        Field::new("port", "Port", Input::Number)
            .required()
            .endpoint(),
        Field::new("tls", "TLS", Input::Choice(&["starttls", "tls", "none"]))
            .required()
            .endpoint(),
        Field::new("from", "From address", Input::Text)
            .hint("e.g. News <news@example.org>")
            .required(),
        Field::new("username", "Username", Input::Text),
        Field::new("password", "Password", Input::Secret)
            .hint("Stored encrypted; never shown again.")
            .with("username"),
        Field::new("default_subject", "Default subject", Input::Text),
        Field::new("max_connections", "Max connections", Input::Number),
        Field::new("ses_topic_arn", "Amazon SES: SNS topic ARN", Input::Text)
            .hint("Bounces and complaints from Amazon SES: the topic its notifications go to."),
        Field::new(
            "postmark_webhook_token",
            "Postmark: webhook token",
            Input::Secret,
        )
        .hint("Bounces and complaints from Postmark: the basic-auth password of its webhooks. Stored encrypted."),
        Field::new(
            "sendgrid_verification_key",
            "SendGrid: verification key",
            Input::Text,
        )
        .hint("Bounces and complaints from SendGrid: the signed Event Webhook's public key."),
        Field::new(
            "allow_plaintext_auth",
            "Send the password without TLS (TLS none, a relay on a trusted network only)",
            Input::Checkbox,
        )
        .endpoint(),
    ],
    in_doubt_wait: InDoubtWait::None,
    webhooks: &[SES, POSTMARK, SENDGRID],
};
