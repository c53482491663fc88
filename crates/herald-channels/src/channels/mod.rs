//! Channels: how a message leaves Herald. Each kind lives in its own file, with its
//! [`Implementation`] (how to build its channel, the rules of its settings) registered in
//! [`IMPLEMENTATIONS`]; what every layer knows of a kind without sending through it is its
//! descriptor (`crate::channel_kind`). The engine sees only the `Channel` trait and the
//! classification of a send's result.

pub mod classify;
pub mod error;
pub mod http;
pub mod sandbox;
pub mod settings;
pub mod smtp;
pub mod template_check;
pub mod twilio;
pub mod whatsapp;

pub use error::ChannelError;
pub use settings::{Checked, Flags, SettingProblem, SettingsError};

use crate::channel_kind::ChannelKind;
use crate::ids::{CampaignId, ChannelId, MessageId};
use crate::store::{ChannelInfo, Store, StoreError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message to send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub message_id: MessageId,
    pub campaign_id: CampaignId,
    pub address: crate::address::Address,
    pub body: String,
    pub attempt: i64,
    /// One-click unsubscribe URL for this recipient (email `List-Unsubscribe`), when
    /// Herald has a public URL.
    pub unsubscribe_url: Option<String>,
    /// The campaign's WhatsApp template with this recipient's parameter values
    /// (`whatsapp_template`); None: the body is the message (or the channel's template).
    pub template: Option<TemplateSend>,
    /// The campaign's email parts for this recipient (subject, HTML, sender name,
    /// reply-to); None: an SMTP channel sends the body as plain text, its first line the
    /// subject. The body is the plain-text part.
    pub email: Option<crate::email_content::RenderedEmail>,
}

/// Why a campaign's template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateCheckError {
    /// The provider answered: no such template, not approved, other parameters, or the
    /// channel's credentials refused. The campaign must change.
    Refused(String),
    /// The provider could not be asked now.
    Unreachable(String),
}

/// An approved WhatsApp template to send, with its body parameters' values in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSend {
    pub name: String,
    pub language: String,
    pub parameters: Vec<String>,
}

/// A message in doubt, as a provider would know it.
#[derive(Debug, Clone)]
pub struct LookupQuery {
    pub address: crate::address::Address,
    pub body: String,
    /// No copy of the message can be older than this (epoch ms).
    pub sent_after_ms: i64,
}

/// What the provider said, classified the way the engine acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    Accepted {
        provider_id: String,
    },
    /// Worth retrying later (timeouts before the request left, 5xx, rate limits).
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (invalid number, rejected content).
    Permanent {
        error: String,
    },
    /// The recipient opted out at the provider (Twilio 21610): the message fails and the
    /// address joins the organisation's suppression list.
    OptOut {
        error: String,
    },
    /// The channel cannot send at all (bad credentials, account suspended): the campaign
    /// is paused with this reason and the message waits to be retried after a resume.
    StopCampaign {
        error: String,
    },
    /// The provider refused the channel's credentials (HTTP 401 or 403): the account is
    /// refused, so no message can go. The channel becomes unavailable at once with
    /// `reason` (a sentence naming the settings to check), its sending campaigns are
    /// paused, and the probe resumes them when the provider accepts the credentials again
    /// (or a person gives new secrets). `error` is the provider's own words.
    CredentialsRefused {
        reason: String,
        error: String,
    },
    /// The request may have reached the provider (timeout, 5xx with no idempotency): the
    /// message is in doubt.
    Unknown {
        error: String,
    },
    /// The provider could not be reached at all, so nothing was sent: the connection was
    /// refused or reset before the request left, the name did not resolve, the TLS
    /// handshake failed, connecting timed out. It says nothing about the recipient: the
    /// message goes back to the queue without spending an attempt, and enough of these in
    /// a row mark the channel unavailable (`outage_after_failures`).
    Unreachable {
        error: String,
    },
}

impl SendResult {
    /// What the provider said, for a record of a send outside a campaign (an answer to an
    /// inbound message).
    pub fn describe(&self) -> String {
        match self {
            SendResult::Accepted { provider_id } => format!("accepted as {provider_id}"),
            SendResult::Transient { error, .. }
            | SendResult::Permanent { error }
            | SendResult::OptOut { error }
            | SendResult::StopCampaign { error }
            | SendResult::Unknown { error }
            | SendResult::Unreachable { error } => error.clone(),
            SendResult::CredentialsRefused { reason, .. } => reason.clone(),
        }
    }
}

/// Builds a kind's channel from its stored row.
pub type BuildFn = fn(&ChannelInfo, &BuildInputs<'_>) -> Result<Arc<dyn Channel>, ChannelError>;

/// Checks a kind's `config` and `secrets` as the API gives them.
pub type CheckFn = fn(&Map<String, Value>, &Map<String, Value>) -> Result<Checked, SettingsError>;

/// What this crate knows of one kind: how to build its channel and the rules of its
/// settings. Each kind's file has one, next to its channel.
pub struct Implementation {
    pub kind: ChannelKind,
    /// The channel, from its stored row.
    pub build: BuildFn,
    /// The validation hook: `config` and `secrets` as the API gives them, checked by the
    /// kind's types and rules (`settings::check`), as they are to be stored.
    pub check: CheckFn,
    /// The same from `herald channel create`'s flags, in the CLI's words.
    pub from_flags: fn(&Flags) -> Result<Checked, ChannelError>,
}

/// The kinds this crate can send through, one line each; a test checks that it holds
/// exactly the kinds of `channel_kind::ALL`.
pub const IMPLEMENTATIONS: &[&Implementation] = &[
    &sandbox::IMPLEMENTATION,
    &twilio::IMPLEMENTATION,
    &whatsapp::IMPLEMENTATION,
    &smtp::IMPLEMENTATION,
];

/// The implementation of `kind`.
pub fn implementation(kind: ChannelKind) -> Option<&'static Implementation> {
    IMPLEMENTATIONS.iter().copied().find(|i| i.kind == kind)
}

/// What building a channel may use besides its stored row.
pub struct BuildInputs<'a> {
    pub context: &'a BuildContext,
    /// The sandbox records what its simulated provider received here.
    pub store: &'a Store,
    /// Where the sandbox sends its simulated delivery receipts.
    pub receipts: &'a Option<tokio::sync::mpsc::Sender<crate::store::Receipt>>,
}

pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;
    /// The channel's name, for logs and metric labels.
    fn name(&self) -> &str;
    /// What one message costs against the channel's rate limit: SMS count segments,
    /// everything else one per message.
    fn cost(&self, _body: &str) -> f64 {
        1.0
    }
    /// Asks the provider whether it has a message whose outcome Herald does not know:
    /// `Some(Ok(Some(provider_id)))` it has it, `Some(Ok(None))` it does not, `Some(Err)`
    /// it could not answer now. None: this provider cannot be asked.
    fn lookup<'a>(
        &'a self,
        _query: &'a LookupQuery,
    ) -> Option<BoxFuture<'a, Result<Option<String>, ChannelError>>> {
        None
    }
    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult>;
    /// Asks the provider whether `template` can be sent through this channel (it exists in
    /// that language, is approved and takes that many parameters), when a campaign naming
    /// it is created. None when this kind or this channel cannot ask (WhatsApp without a
    /// business account id).
    fn verify_template<'a>(
        &'a self,
        _template: &'a crate::whatsapp_template::WhatsAppTemplate,
    ) -> Option<BoxFuture<'a, Result<(), TemplateCheckError>>> {
        None
    }
    /// Asks the provider whether it answers at all, sending nothing: the probe of a
    /// channel marked unavailable. `Ok` when it answers (the channel is available again),
    /// `Err(why)` while it still cannot be reached or refuses the channel's credentials.
    fn probe(&self) -> BoxFuture<'_, Result<(), ChannelError>>;
}

// SMS segment counting is plain text knowledge, below the channels (the fakes use it too).
pub use crate::segments;

/// Builds each channel once per process from its stored configuration.
/// What building a channel may need besides its stored row.
#[derive(Clone, Default)]
pub struct BuildContext {
    /// Herald's public base URL (callback URLs, unsubscribe links); None when not set.
    pub public_url: Option<String>,
    /// `secret_key` from settings, unparsed (a bad key is reported when a channel with
    /// secrets is built, naming the fix).
    pub secret_key: Option<String>,
    /// Which destinations channels may connect to (`outbound_allow_private`,
    /// `outbound_allow_cidrs`); the default refuses private and loopback ranges.
    pub outbound: crate::outbound::OutboundGuard,
}

impl BuildContext {
    /// The context the settings describe. Settings are validated when loaded (a bad
    /// `outbound_allow_cidrs` stops startup); one that slipped past fails closed here:
    /// no network is allowed on its account.
    pub fn from_settings(settings: &crate::config::Settings) -> BuildContext {
        let outbound = settings.outbound_guard().unwrap_or_else(|e| {
            tracing::error!(error = %e, "outbound_allow_cidrs ignored: private destinations stay refused");
            crate::outbound::OutboundGuard::new(settings.outbound_allow_private, Vec::new())
        });
        BuildContext {
            public_url: settings.public_url.clone(),
            secret_key: settings.secret_key.clone(),
            outbound,
        }
    }
}

impl BuildContext {
    /// Opens the channel's sealed secrets.
    pub fn open_secrets(&self, info: &ChannelInfo) -> Result<serde_json::Value, ChannelError> {
        let Some(sealed) = &info.secrets else {
            return Ok(serde_json::Value::Object(Default::default()));
        };
        let key = crate::secrets::SecretKey::from_settings(self.secret_key.as_deref())?
            .ok_or(crate::secrets::SecretError::NoKey)?;
        Ok(crate::secrets::open(&key, info.id, sealed)?)
    }
}

/// A built channel and its rate limit (messages or SMS segments per second).
type BuiltChannel = (Arc<dyn Channel>, Option<f64>);

#[derive(Clone)]
pub struct ChannelRegistry {
    store: Store,
    receipts: Option<tokio::sync::mpsc::Sender<crate::store::Receipt>>,
    context: BuildContext,
    built: Arc<Mutex<HashMap<ChannelId, BuiltChannel>>>,
}

impl ChannelRegistry {
    /// `receipts` receives simulated delivery receipts (sandbox) to apply to the store.
    pub fn new(
        store: Store,
        receipts: Option<tokio::sync::mpsc::Sender<crate::store::Receipt>>,
        context: BuildContext,
    ) -> ChannelRegistry {
        ChannelRegistry {
            store,
            receipts,
            context,
            built: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn context(&self) -> &BuildContext {
        &self.context
    }

    pub async fn get(&self, channel_id: ChannelId) -> Result<Arc<dyn Channel>, StoreError> {
        Ok(self.get_with_rate(channel_id).await?.0)
    }

    /// The channel and its rate limit (messages or SMS segments per second), if any.
    pub async fn get_with_rate(&self, channel_id: ChannelId) -> Result<BuiltChannel, StoreError> {
        if let Some(c) = self
            .built
            .lock()
            .map_err(|_| StoreError::Invalid("channel registry poisoned".into()))?
            .get(&channel_id)
        {
            return Ok(c.clone());
        }
        let info = self.store.channel(channel_id).await?;
        let built = (self.build(&info)?, info.rate_per_sec);
        self.built
            .lock()
            .map_err(|_| StoreError::Invalid("channel registry poisoned".into()))?
            .insert(channel_id, built.clone());
        Ok(built)
    }

    /// The channel built afresh from its stored row, not cached: what the probe of an
    /// unavailable channel uses, so a configuration fixed during the outage is the one
    /// probed.
    pub async fn fresh(&self, channel_id: ChannelId) -> Result<Arc<dyn Channel>, StoreError> {
        let info = self.store.channel(channel_id).await?;
        self.build(&info)
    }

    /// Drops the channel's cached build: the next send builds it again from its stored
    /// row (after an outage, with whatever configuration it has now).
    pub fn forget(&self, channel_id: ChannelId) {
        if let Ok(mut built) = self.built.lock() {
            built.remove(&channel_id);
        }
    }

    fn build(&self, info: &ChannelInfo) -> Result<Arc<dyn Channel>, StoreError> {
        let Some(implementation) = info
            .kind
            .parse::<ChannelKind>()
            .ok()
            .and_then(implementation)
        else {
            return Err(StoreError::Invalid(format!(
                "channel `{}` has kind `{}`, which this herald cannot send through (known: {})",
                info.name,
                info.kind,
                crate::channel_kind::names()
            )));
        };
        let inputs = BuildInputs {
            context: &self.context,
            store: &self.store,
            receipts: &self.receipts,
        };
        (implementation.build)(info, &inputs)
            .map_err(|e| StoreError::Invalid(format!("channel `{}`: {e}", info.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_kind::Input;

    /// The problems found with settings.
    fn problems(result: Result<Checked, SettingsError>) -> Vec<SettingProblem> {
        match result {
            Err(SettingsError::Invalid(problems)) => problems,
            other => panic!("{other:?}"),
        }
    }

    /// serde's list of the keys of a section's type, from the error naming an unknown one.
    fn serde_keys(section: &str, result: Result<Checked, SettingsError>) -> Vec<String> {
        let problems = problems(result);
        let Some(detail) = problems.iter().find_map(|p| match p {
            SettingProblem::Field { field, detail, .. }
                if field == &format!("{section}.not_a_setting") =>
            {
                Some(detail)
            }
            _ => None,
        }) else {
            panic!("{problems:?}");
        };
        let known = detail
            .split_once("(expected ")
            .map(|(_, k)| k.trim_end_matches(')'))
            .unwrap_or_default();
        if known == "there are no fields" {
            return Vec::new();
        }
        known
            .replace(" or ", ", ")
            .split(", ")
            .map(|k| {
                k.trim_start_matches("one of ")
                    .trim_start_matches("a field ")
                    .trim_matches('`')
                    .to_string()
            })
            .collect()
    }

    /// Every kind of `channel_kind::ALL` has one implementation here, in the same order,
    /// and the settings its descriptor lists are exactly the keys its types take.
    #[test]
    fn every_kind_has_one_implementation_whose_types_take_its_settings() {
        let kinds: Vec<ChannelKind> = IMPLEMENTATIONS.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, crate::channel_kind::ALL);
        for kind in crate::channel_kind::ALL {
            let implementation = implementation(*kind).expect("registered");
            let unknown: Map<String, Value> = [("not_a_setting".to_string(), Value::Null)]
                .into_iter()
                .collect();
            let config = serde_keys("config", (implementation.check)(&unknown, &Map::new()));
            let mut declared: Vec<&str> = kind.config_fields().collect();
            let mut taken: Vec<&str> = config.iter().map(String::as_str).collect();
            declared.sort();
            taken.sort();
            assert_eq!(declared, taken, "{kind}: configuration keys");
            let secrets: Vec<&str> = kind.secret_fields().collect();
            if !secrets.is_empty() {
                let keys = serde_keys("secrets", (implementation.check)(&Map::new(), &unknown));
                let mut taken: Vec<&str> = keys.iter().map(String::as_str).collect();
                let mut declared = secrets.clone();
                taken.sort();
                declared.sort();
                assert_eq!(declared, taken, "{kind}: secret keys");
            }
            // An empty configuration lacks a required key exactly when the descriptor
            // names one.
            let empty = match (implementation.check)(&Map::new(), &Map::new()) {
                Ok(_) => Vec::new(),
                Err(e) => problems(Err(e)),
            };
            let lacks_one = empty.iter().any(|p| {
                matches!(p, SettingProblem::Field { field, rule: "required", .. }
                    if kind.fields().iter().any(|f| f.required && !f.is_secret() && field == &format!("config.{}", f.key)))
            });
            assert_eq!(
                lacks_one,
                kind.fields().iter().any(|f| f.required && !f.is_secret()),
                "{kind}: {empty:?}"
            );
            for field in kind.fields() {
                if let Input::Choice(options) = field.input {
                    for option in options {
                        let one: Map<String, Value> =
                            [(field.key.to_string(), Value::from(*option))]
                                .into_iter()
                                .collect();
                        let problems = problems((implementation.check)(&one, &Map::new()));
                        assert!(
                            !problems.iter().any(|p| matches!(p, SettingProblem::Field { field: f, .. } if f == &format!("config.{}", field.key))),
                            "{kind}: `{option}` is not a value of `{}`: {problems:?}",
                            field.key
                        );
                    }
                }
            }
        }
    }
}
