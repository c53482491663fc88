//! The channel kinds Herald knows, each described once: the addresses it delivers to, the
//! settings it takes (configuration and secrets), whether its messages are SMS counted by
//! segment, how long a message of it found in doubt waits, and the provider webhooks it
//! receives. It sits below the store and the channels, so every layer asks the same
//! descriptor (the store its address rule, the API and the dashboard its settings, the
//! engine its in-doubt wait, the webhook router its routes).
//!
//! # Why a newtype over a descriptor, not an enum
//!
//! [`ChannelKind`] is a `&'static` [`ChannelKindDescriptor`] behind a newtype whose field
//! only this module and its kind files can set. An enum would need a new variant and an
//! arm in every `match` that asks a per-kind question, wherever it is asked; here a kind
//! *is* its data, and every per-kind question is a field of its descriptor. Adding a kind
//! is therefore one new file in this directory (its `NAME`, `DESCRIPTOR` and `KIND`) and
//! one line in [`ALL`]; its behaviour (the `Channel` and how to build it) is one new file
//! in herald-channels and one line in `channels::IMPLEMENTATIONS`. Code that is about one
//! provider only (Twilio's webhook handlers, the sandbox's record) names that kind's
//! constant (`twilio::KIND`) and compares with `==`; nothing matches on names.
//!
//! Names are strings only at the edges: database rows, JSON, command-line arguments. They
//! are parsed once with [`str::parse`] (`FromStr`), whose error names the input and the
//! kinds accepted. A row whose kind this herald does not know (written by a newer herald,
//! or by hand) stays readable: what it cannot do is be built into a channel.

use crate::address::AddressKind;
use std::fmt;
use std::str::FromStr;

pub mod sandbox;
pub mod smtp;
pub mod twilio;
pub mod whatsapp;

/// Every kind this herald knows, in the order lists and the dashboard show them.
/// Registering a kind is one line here.
pub const ALL: &[ChannelKind] = &[sandbox::KIND, twilio::KIND, whatsapp::KIND, smtp::KIND];

/// One channel kind; see the module documentation for why it is not an enum.
#[derive(Clone, Copy)]
pub struct ChannelKind(&'static ChannelKindDescriptor);

/// Everything Herald decides by a channel's kind, apart from how its channel sends (that
/// is the kind's `Channel` in herald-channels, with the validation of its settings).
#[derive(Debug)]
pub struct ChannelKindDescriptor {
    /// The name the database, the API and the CLI use (`twilio`).
    pub name: &'static str,
    /// How the dashboard's kind picker names it.
    pub label: &'static str,
    /// The addresses it delivers to; None when it takes any (the sandbox). A campaign's
    /// contacts with another kind of address are skipped at its start, a test message to
    /// one is refused, and alerts to one pick another channel.
    pub address: Option<AddressKind>,
    /// Whether its messages are SMS, billed by segment: the template preview counts
    /// segments and the encoding for it (its channel may still count one per message for
    /// a configuration that sends no SMS, like WhatsApp through Twilio).
    pub sms_segments: bool,
    /// Its settings, configuration and secrets, in the order the dashboard's form shows
    /// them. The rules a value must follow are the kind's own validation, in
    /// herald-channels (`Implementation::check`).
    pub fields: &'static [Field],
    /// How long a message of this kind found in doubt waits before its provider is asked
    /// or the in-doubt policy decides.
    pub in_doubt_wait: InDoubtWait,
    /// The provider webhooks it receives, under `/webhooks/{name}/{channel id}`.
    pub webhooks: &'static [WebhookRoute],
}

/// How a setting is entered, in the dashboard's form; [`Input::Secret`] makes it a
/// secret (sealed at rest, write-only), anything else is public configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Text,
    Number,
    Checkbox,
    Secret,
    /// One of these words.
    Choice(&'static [&'static str]),
}

/// One setting of a kind: a key of its `config` or `secrets` object (the API's and the
/// dashboard's names; `herald channel create` takes it as `--key-with-dashes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub key: &'static str,
    /// The dashboard form's label.
    pub label: &'static str,
    pub input: Input,
    /// The dashboard form's hint; empty for none.
    pub hint: &'static str,
    /// A channel of the kind cannot be created without it.
    pub required: bool,
    /// Set only together with this configuration key (SMTP's `password`, with
    /// `username`): a secret is expected only when that key is set.
    pub with: Option<&'static str>,
    /// It says where the provider is, or how the way there is protected: a channel's
    /// secrets are never kept across a change of it (they were given for the old
    /// endpoint).
    pub endpoint: bool,
    /// Shown in the dashboard's form (the sandbox's simulated outage is for tests and the
    /// CLI only).
    pub in_form: bool,
}

impl Field {
    /// An optional setting, in the form, with no hint.
    pub const fn new(key: &'static str, label: &'static str, input: Input) -> Field {
        Field {
            key,
            label,
            input,
            hint: "",
            required: false,
            with: None,
            endpoint: false,
            in_form: true,
        }
    }

    pub const fn hint(self, hint: &'static str) -> Field {
        Field { hint, ..self }
    }

    pub const fn required(self) -> Field {
        Field {
            required: true,
            ..self
        }
    }

    pub const fn with(self, key: &'static str) -> Field {
        Field {
            with: Some(key),
            ..self
        }
    }

    pub const fn endpoint(self) -> Field {
        Field {
            endpoint: true,
            ..self
        }
    }

    pub const fn hidden(self) -> Field {
        Field {
            in_form: false,
            ..self
        }
    }

    pub const fn is_secret(&self) -> bool {
        matches!(self.input, Input::Secret)
    }

    /// `secrets` or `config`: the object of the API's request the setting belongs in.
    pub const fn section(&self) -> &'static str {
        if self.is_secret() {
            "secrets"
        } else {
            "config"
        }
    }
}

/// How long a message found in doubt waits before its provider is asked about it, or the
/// in-doubt policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InDoubtWait {
    /// Not at all: the provider can be asked at once, or cannot be asked and does not tell.
    None,
    /// The provider cannot be asked, but its status webhooks name the message (WhatsApp's
    /// `biz_opaque_callback_data`): wait this long for one before the policy decides.
    ForWebhook { ms: i64 },
    /// The provider can be asked, once a message created an instant before can show in its
    /// list: ask after the `provider_lookup_delay_ms` setting (5 s by default).
    ProviderLookupDelay,
}

impl InDoubtWait {
    /// The wait in milliseconds, given the `provider_lookup_delay_ms` setting; None for
    /// no wait.
    pub fn ms(self, provider_lookup_delay_ms: u64) -> Option<i64> {
        match self {
            InDoubtWait::None => None,
            InDoubtWait::ForWebhook { ms } => Some(ms),
            InDoubtWait::ProviderLookupDelay => {
                Some(i64::try_from(provider_lookup_delay_ms).unwrap_or(i64::MAX))
            }
        }
    }
}

/// A provider webhook a kind receives: `/webhooks/{kind}/{channel id}{suffix}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookRoute {
    /// After the channel id: empty, or `/status`.
    pub suffix: &'static str,
    /// How a request to it is recorded (`webhook_events.kind`).
    pub recorded_as: &'static str,
    /// What the dashboard calls it.
    pub label: &'static str,
    /// Where it goes in the provider's console, as the dashboard says it.
    pub hint: &'static str,
}

impl ChannelKind {
    /// The kind's name: `twilio`.
    pub const fn as_str(self) -> &'static str {
        self.0.name
    }

    pub const fn descriptor(self) -> &'static ChannelKindDescriptor {
        self.0
    }

    /// The address kind it requires; None when it takes any.
    pub const fn address_kind(self) -> Option<AddressKind> {
        self.0.address
    }

    /// Whether it delivers to addresses of `kind`: what a campaign's start, a test message
    /// and the choice of an alert channel check.
    pub fn reaches(self, kind: AddressKind) -> bool {
        self.0.address.is_none_or(|required| required == kind)
    }

    /// Whether its messages are SMS, counted by segment.
    pub const fn counts_sms_segments(self) -> bool {
        self.0.sms_segments
    }

    pub fn fields(self) -> &'static [Field] {
        self.0.fields
    }

    /// The keys of its configuration, in form order.
    pub fn config_fields(self) -> impl Iterator<Item = &'static str> {
        self.0
            .fields
            .iter()
            .filter(|f| !f.is_secret())
            .map(|f| f.key)
    }

    /// The keys of its secrets, in form order.
    pub fn secret_fields(self) -> impl Iterator<Item = &'static str> {
        self.0
            .fields
            .iter()
            .filter(|f| f.is_secret())
            .map(|f| f.key)
    }

    pub const fn in_doubt_wait(self) -> InDoubtWait {
        self.0.in_doubt_wait
    }

    pub fn webhooks(self) -> &'static [WebhookRoute] {
        self.0.webhooks
    }

    /// The path of one of its webhooks for `channel` (a channel id, or a route's
    /// `{channel_id}` placeholder): `/webhooks/twilio/chn_5/status`.
    pub fn webhook_path(self, route: &WebhookRoute, channel: &str) -> String {
        format!("/webhooks/{}/{channel}{}", self.0.name, route.suffix)
    }
}

impl PartialEq for ChannelKind {
    fn eq(&self, other: &ChannelKind) -> bool {
        // Names are unique (a test checks); a descriptor's address is not, since a
        // constant may be copied wherever it is used.
        self.0.name == other.0.name
    }
}

impl Eq for ChannelKind {}

impl std::hash::Hash for ChannelKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelKind({})", self.0.name)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// A name that is no kind this herald knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownChannelKind {
    pub given: String,
}

impl fmt::Display for UnknownChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a channel kind: use one of {}",
            self.given,
            names()
        )
    }
}

impl std::error::Error for UnknownChannelKind {}

impl FromStr for ChannelKind {
    type Err = UnknownChannelKind;

    /// The kind of this exact name (names are lower case; `Twilio` is not one).
    fn from_str(s: &str) -> Result<ChannelKind, UnknownChannelKind> {
        ALL.iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownChannelKind {
                given: s.to_string(),
            })
    }
}

/// The kinds' names as messages list them: `sandbox, twilio, whatsapp, smtp`.
pub fn names() -> String {
    ALL.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn each_kind_names_its_addresses() {
        assert_eq!(twilio::KIND.address_kind(), Some(AddressKind::Phone));
        assert_eq!(whatsapp::KIND.address_kind(), Some(AddressKind::Phone));
        assert_eq!(smtp::KIND.address_kind(), Some(AddressKind::Email));
        assert_eq!(sandbox::KIND.address_kind(), None);
        assert!(
            sandbox::KIND.reaches(AddressKind::Phone) && sandbox::KIND.reaches(AddressKind::Email)
        );
        assert!(!smtp::KIND.reaches(AddressKind::Phone));
        assert!(twilio::KIND.counts_sms_segments());
        assert!(
            ALL.iter()
                .filter(|k| k.counts_sms_segments())
                .all(|k| k.address_kind() == Some(AddressKind::Phone))
        );
    }

    /// Every registered descriptor is consistent: unique names that parse back to their
    /// kind, settings named once each, webhook routes distinct, and an address rule that
    /// is the one the senders check.
    #[test]
    fn every_registered_kind_is_consistent() {
        let mut names_seen = BTreeSet::new();
        let mut recorded = BTreeSet::new();
        for kind in ALL {
            let name = kind.as_str();
            assert!(names_seen.insert(name), "`{name}` is registered twice");
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()),
                "`{name}`: a kind's name is lower-case letters (it is a path segment too)"
            );
            assert_eq!(name.parse::<ChannelKind>(), Ok(*kind));
            assert_eq!(kind.to_string(), name);
            assert_eq!(kind.descriptor().name, name);
            assert!(!kind.descriptor().label.is_empty(), "{name}");
            assert!(
                name.to_uppercase().parse::<ChannelKind>().is_err(),
                "names are exact"
            );

            // The senders' check: a campaign's start skips, a test message refuses and an
            // alert avoids exactly the addresses `reaches` refuses.
            for address in [AddressKind::Phone, AddressKind::Email] {
                assert_eq!(
                    kind.reaches(address),
                    kind.address_kind().is_none_or(|a| a == address),
                    "{name} and {address} addresses"
                );
            }

            let mut keys = BTreeSet::new();
            for field in kind.fields() {
                assert!(keys.insert(field.key), "{name}: `{}` twice", field.key);
                assert!(
                    !field.key.is_empty()
                        && field
                            .key
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}: `{}` is not a setting key",
                    field.key
                );
                assert!(!field.label.is_empty(), "{name}.{}", field.key);
                if let Some(with) = field.with {
                    assert!(
                        !field.required,
                        "{name}.{}: a setting given only with another is not required",
                        field.key
                    );
                    assert!(
                        kind.config_fields().any(|k| k == with),
                        "{name}.{} comes with `{with}`, which is no configuration key",
                        field.key
                    );
                }
                assert!(
                    !(field.is_secret() && field.endpoint),
                    "{name}.{}: an endpoint is public configuration",
                    field.key
                );
                assert!(
                    field.in_form || !field.required,
                    "{name}.{}: the form cannot create a channel without it",
                    field.key
                );
            }

            let mut suffixes = BTreeSet::new();
            for route in kind.webhooks() {
                assert!(suffixes.insert(route.suffix), "{name}: a route twice");
                assert!(
                    route.suffix.is_empty()
                        || (route.suffix.starts_with('/')
                            && route.suffix[1..].bytes().all(|b| b.is_ascii_lowercase())),
                    "{name}: `{}`",
                    route.suffix
                );
                assert!(
                    recorded.insert(route.recorded_as),
                    "`{}` records two routes",
                    route.recorded_as
                );
                assert!(!route.label.is_empty() && !route.hint.is_empty());
            }
            if let InDoubtWait::ForWebhook { ms } = kind.in_doubt_wait() {
                assert!(ms > 0, "{name}");
                assert!(
                    !kind.webhooks().is_empty(),
                    "{name} waits for a webhook it does not receive"
                );
            }
        }
        assert_eq!(names(), "sandbox, twilio, whatsapp, smtp");
    }

    #[test]
    fn an_unknown_name_is_refused_naming_it_and_the_kinds() {
        let e = "sms".parse::<ChannelKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sms` is not a channel kind: use one of sandbox, twilio, whatsapp, smtp"
        );
        assert!("".parse::<ChannelKind>().is_err());
        assert!(" twilio".parse::<ChannelKind>().is_err());
    }

    #[test]
    fn webhook_paths_and_waits() {
        assert_eq!(
            twilio::KIND.webhook_path(&twilio::STATUS_CALLBACK, "chn_5"),
            "/webhooks/twilio/chn_5/status"
        );
        assert_eq!(
            whatsapp::KIND.webhook_path(&whatsapp::EVENTS, "{channel_id}"),
            "/webhooks/whatsapp/{channel_id}"
        );
        assert_eq!(whatsapp::KIND.in_doubt_wait().ms(5), Some(60_000));
        assert_eq!(twilio::KIND.in_doubt_wait().ms(5), Some(5));
        assert_eq!(smtp::KIND.in_doubt_wait().ms(5), None);
        assert_eq!(sandbox::KIND.in_doubt_wait().ms(5), None);
    }
}
