//! Typed ids: one canonical spelling for every id Herald shows.
//!
//! Every row id a user sees is a prefixed decimal, `cmp_2`, `chn_5`, `lst_3`: the API, the
//! dashboard's URLs, the CLI's output, the logs and the provider callback URLs all print
//! that one form ([`std::fmt::Display`] and serde). Parsing has two doors:
//!
//! - [`std::str::FromStr`] (and serde) takes only the canonical form: the prefix, `_`, and
//!   the digits of [`crate::domain::canonical_id`] (no sign, no leading zero, no space), so
//!   an id has exactly one spelling. The API uses this one.
//! - [`CampaignId::parse_lenient`] (every type has one) also takes the bare number, for
//!   the command line (`herald campaign start 2`) and for provider webhook paths configured
//!   before ids were prefixed (`/webhooks/twilio/5/status`).
//!
//! The database keeps plain `i64` row ids; a typed id is a newtype over one, bound to and
//! read from `sqlx::Any` rows as that number, so code passes the typed id everywhere and
//! only the SQL sees the integer.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The canonical spelling of row `id` under `prefix` (`cmp`, 2 → `cmp_2`).
pub fn format_id(prefix: &str, id: i64) -> String {
    format!("{prefix}_{id}")
}

/// The row id of `text` when it is exactly `{prefix}_{digits}` with canonical digits.
pub fn parse_canonical(prefix: &str, text: &str) -> Option<i64> {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(crate::domain::canonical_id)
}

/// Like [`parse_canonical`], and the bare canonical number too (`cmp_2` or `2`).
pub fn parse_lenient(prefix: &str, text: &str) -> Option<i64> {
    parse_canonical(prefix, text).or_else(|| crate::domain::canonical_id(text))
}

/// An id that does not parse, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    /// What the id names ("campaign").
    pub what: &'static str,
    /// Its prefix (`cmp`).
    pub prefix: &'static str,
    /// The text given.
    pub given: String,
    /// Whether the bare number was accepted too.
    pub lenient: bool,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let IdError {
            what,
            prefix,
            given,
            lenient,
        } = self;
        if *lenient {
            write!(
                f,
                "`{given}` is not a {what} id: write {prefix}_N or N, e.g. {prefix}_2 or 2"
            )
        } else {
            write!(
                f,
                "`{given}` is not a {what} id: write {prefix}_N, e.g. {prefix}_2"
            )
        }
    }
}

impl std::error::Error for IdError {}

/// What every typed id shares, for code generic over the kind of id.
pub trait TypedId: Copy + fmt::Display + std::str::FromStr<Err = IdError> {
    /// The prefix of the canonical form (`cmp`).
    const PREFIX: &'static str;
    /// What the id names, in words (`campaign`).
    const WHAT: &'static str;
    /// The id of a row.
    fn from_row(id: i64) -> Self;
    /// The row id.
    fn row(self) -> i64;
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl $name {
            /// The prefix of the canonical form.
            pub const PREFIX: &'static str = $prefix;
            /// What the id names, in words.
            pub const WHAT: &'static str = $what;

            /// The row id.
            pub fn get(self) -> i64 {
                self.0
            }

            /// The canonical form, or the bare number (the CLI, provider webhook paths).
            pub fn parse_lenient(text: &str) -> Result<Self, IdError> {
                parse_lenient($prefix, text).map($name).ok_or_else(|| IdError {
                    what: $what,
                    prefix: $prefix,
                    given: text.to_string(),
                    lenient: true,
                })
            }
        }

        impl TypedId for $name {
            const PREFIX: &'static str = $prefix;
            const WHAT: &'static str = $what;
            fn from_row(id: i64) -> Self {
                $name(id)
            }
            fn row(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            /// The canonical form only.
            fn from_str(text: &str) -> Result<Self, IdError> {
                parse_canonical($prefix, text).map($name).ok_or_else(|| IdError {
                    what: $what,
                    prefix: $prefix,
                    given: text.to_string(),
                    lenient: false,
                })
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        // Bound and read as the plain row id, so a store query takes and returns the typed id.
        impl sqlx_core::types::Type<sqlx_core::any::Any> for $name {
            fn type_info() -> sqlx_core::any::AnyTypeInfo {
                <i64 as sqlx_core::types::Type<sqlx_core::any::Any>>::type_info()
            }
            fn compatible(ty: &sqlx_core::any::AnyTypeInfo) -> bool {
                <i64 as sqlx_core::types::Type<sqlx_core::any::Any>>::compatible(ty)
            }
        }

        impl<'q> sqlx_core::encode::Encode<'q, sqlx_core::any::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx_core::any::AnyArgumentBuffer,
            ) -> Result<sqlx_core::encode::IsNull, sqlx_core::error::BoxDynError> {
                <i64 as sqlx_core::encode::Encode<'q, sqlx_core::any::Any>>::encode_by_ref(
                    &self.0, buf,
                )
            }
        }

        impl<'r> sqlx_core::decode::Decode<'r, sqlx_core::any::Any> for $name {
            fn decode(
                value: sqlx_core::any::AnyValueRef<'r>,
            ) -> Result<Self, sqlx_core::error::BoxDynError> {
                <i64 as sqlx_core::decode::Decode<'r, sqlx_core::any::Any>>::decode(value)
                    .map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// A campaign: `cmp_2`.
    CampaignId, "cmp", "campaign"
);
typed_id!(
    /// A channel: `chn_5`.
    ChannelId, "chn", "channel"
);
typed_id!(
    /// A contact list: `lst_3`.
    ListId, "lst", "list"
);
typed_id!(
    /// A contact: `con_7`.
    ContactId, "con", "contact"
);
typed_id!(
    /// A message (one recipient of one campaign): `msg_9`.
    MessageId, "msg", "message"
);
typed_id!(
    /// An entry of a campaign's audit trail: `evt_4`.
    EventId, "evt", "event"
);
typed_id!(
    /// A dashboard user: `usr_1`.
    UserId, "usr", "user"
);
typed_id!(
    /// An API key: `key_1`.
    ApiKeyId, "key", "API key"
);
typed_id!(
    /// An organisation (tenant): `org_1`.
    OrgId, "org", "organisation"
);
typed_id!(
    /// An outbound event in the outbox (docs/EVENTS.md): `ntf_12`; the Standard Webhooks
    /// `webhook-id` of every delivery of it.
    NotificationId, "ntf", "event notification"
);
typed_id!(
    /// An organisation's webhook endpoint: `whk_3`.
    WebhookEndpointId, "whk", "webhook endpoint"
);
typed_id!(
    /// An alert to one of an organisation's alert recipients (docs/ALERTS.md): `alr_4`.
    AlertId, "alr", "alert"
);
typed_id!(
    /// An inbound message in the replies inbox (docs/INBOX.md): `rpl_5`.
    ReplyId, "rpl", "reply"
);
typed_id!(
    /// One delivery of an outbound event to one webhook endpoint: `dlv_8`. Not shown by the
    /// API (a delivery is named by its event and endpoint); in logs and errors only.
    DeliveryId, "dlv", "webhook delivery"
);
typed_id!(
    /// A dashboard session: `ses_6`. Never shown outside the process (a session is known by
    /// its cookie); in logs only.
    SessionId, "ses", "session"
);

/// Every kind of id a user can see or give: (prefix, what it names). Deliveries and
/// sessions are not among them: no surface shows or takes their ids.
pub const KINDS: [(&str, &str); 13] = [
    (CampaignId::PREFIX, CampaignId::WHAT),
    (ChannelId::PREFIX, ChannelId::WHAT),
    (ListId::PREFIX, ListId::WHAT),
    (ContactId::PREFIX, ContactId::WHAT),
    (MessageId::PREFIX, MessageId::WHAT),
    (EventId::PREFIX, EventId::WHAT),
    (UserId::PREFIX, UserId::WHAT),
    (ApiKeyId::PREFIX, ApiKeyId::WHAT),
    (OrgId::PREFIX, OrgId::WHAT),
    (NotificationId::PREFIX, NotificationId::WHAT),
    (WebhookEndpointId::PREFIX, WebhookEndpointId::WHAT),
    (AlertId::PREFIX, AlertId::WHAT),
    (ReplyId::PREFIX, ReplyId::WHAT),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_the_prefixed_form() {
        assert_eq!(CampaignId(2).to_string(), "cmp_2");
        assert_eq!(ChannelId(5).to_string(), "chn_5");
        assert_eq!(ApiKeyId(1).to_string(), "key_1");
        assert_eq!(format_id("lst", 3), ListId(3).to_string());
    }

    #[test]
    fn canonical_parse_refuses_every_other_spelling() {
        assert_eq!("cmp_2".parse::<CampaignId>(), Ok(CampaignId(2)));
        for bad in [
            "2", "cmp_02", "cmp_+2", "cmp_ 2", " cmp_2", "cmp_2 ", "cmp_", "cmp2", "CMP_2",
            "chn_2", "cmp_0", "cmp_-2", "cmp__2", "",
        ] {
            let e = bad.parse::<CampaignId>().unwrap_err();
            assert_eq!(e.given, bad);
            assert!(e.to_string().contains("cmp_N"), "{e}");
        }
    }

    #[test]
    fn lenient_parse_takes_the_bare_number_too() {
        assert_eq!(CampaignId::parse_lenient("cmp_2"), Ok(CampaignId(2)));
        assert_eq!(CampaignId::parse_lenient("2"), Ok(CampaignId(2)));
        assert_eq!(ChannelId::parse_lenient("chn_5"), Ok(ChannelId(5)));
        for bad in [
            "02", "+2", " 2", "cmp_02", "chn_2", "campaign", "", "0", "-1", "cmp_", "1.0",
        ] {
            let e = CampaignId::parse_lenient(bad).unwrap_err();
            assert!(e.lenient);
            assert_eq!(
                e.to_string(),
                format!("`{bad}` is not a campaign id: write cmp_N or N, e.g. cmp_2 or 2")
            );
        }
    }

    #[test]
    fn serde_is_the_canonical_string() {
        let json = serde_json::to_string(&CampaignId(2)).unwrap();
        assert_eq!(json, "\"cmp_2\"");
        assert_eq!(
            serde_json::from_str::<CampaignId>("\"cmp_2\"").unwrap(),
            CampaignId(2)
        );
        assert!(serde_json::from_str::<CampaignId>("\"2\"").is_err());
        assert!(serde_json::from_str::<CampaignId>("2").is_err());
    }

    #[test]
    fn prefixes_are_distinct() {
        let mut prefixes: Vec<_> = KINDS.iter().map(|(p, _)| *p).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), KINDS.len());
    }

    fn round_trip<T: TypedId + PartialEq + fmt::Debug>(id: i64) {
        let typed = T::from_row(id);
        let text = typed.to_string();
        assert_eq!(text, format!("{}_{id}", T::PREFIX));
        assert_eq!(text.parse::<T>(), Ok(typed));
        assert_eq!(typed.row(), id);
    }

    proptest! {
        #[test]
        fn every_id_round_trips(id in 1..=i64::MAX) {
            round_trip::<CampaignId>(id);
            round_trip::<ChannelId>(id);
            round_trip::<ListId>(id);
            round_trip::<ContactId>(id);
            round_trip::<MessageId>(id);
            round_trip::<EventId>(id);
            round_trip::<UserId>(id);
            round_trip::<ApiKeyId>(id);
            round_trip::<OrgId>(id);
            prop_assert_eq!(CampaignId::parse_lenient(&id.to_string()), Ok(CampaignId(id)));
            let json = serde_json::to_string(&ChannelId(id)).unwrap();
            prop_assert_eq!(serde_json::from_str::<ChannelId>(&json).unwrap(), ChannelId(id));
        }

        #[test]
        fn a_parsed_id_prints_as_given(text in "(cmp_)?[0-9+ -]{0,6}") {
            if let Ok(id) = text.parse::<CampaignId>() {
                prop_assert_eq!(id.to_string(), text.clone());
            }
            if let Ok(id) = CampaignId::parse_lenient(&text) {
                let canonical = id.to_string();
                let bare = id.get().to_string();
                prop_assert!(text == canonical || text == bare);
            }
        }
    }
}
