//! Email over SMTP. Its channel is crates/herald-channels/src/channels/smtp.rs.

use super::{ChannelKind, ChannelKindDescriptor, Field, InDoubtWait, Input};
use crate::address::AddressKind;

pub const NAME: &str = "smtp";

pub const KIND: ChannelKind = ChannelKind(&DESCRIPTOR);

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
        Field::new(
            "allow_plaintext_auth",
            "Send the password without TLS (TLS none, a relay on a trusted network only)",
            Input::Checkbox,
        )
        .endpoint(),
    ],
    in_doubt_wait: InDoubtWait::None,
    webhooks: &[],
};
