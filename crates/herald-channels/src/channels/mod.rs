//! Channels: how a message leaves Herald. Each kind lives in its own file; the engine sees
//! only the `Channel` trait and the classification of a send's result.

pub mod classify;
pub mod http;
pub mod sandbox;
pub mod smtp;
pub mod twilio;
pub mod whatsapp;

use crate::store::{ChannelInfo, Store, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message to send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub message_id: i64,
    pub campaign_id: i64,
    pub address: String,
    pub body: String,
    pub attempt: i64,
    /// One-click unsubscribe URL for this recipient (email `List-Unsubscribe`), when
    /// Herald has a public URL.
    pub unsubscribe_url: Option<String>,
}

/// A message in doubt, as a provider would know it.
#[derive(Debug, Clone)]
pub struct LookupQuery {
    pub address: String,
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

pub trait Channel: Send + Sync {
    fn kind(&self) -> &'static str;
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
    ) -> Option<BoxFuture<'a, Result<Option<String>, String>>> {
        None
    }
    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult>;
    /// Asks the provider whether it answers at all, sending nothing: the probe of a
    /// channel marked unavailable. `Ok` when it answers (the channel is available again),
    /// `Err(why)` while it still cannot be reached or refuses the channel's credentials.
    fn probe(&self) -> BoxFuture<'_, Result<(), String>>;
}

pub use crate::channel_kind::{KINDS, address_requirement};
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
    pub fn open_secrets(&self, info: &ChannelInfo) -> Result<serde_json::Value, String> {
        let Some(sealed) = &info.secrets else {
            return Ok(serde_json::Value::Object(Default::default()));
        };
        let key = crate::secrets::SecretKey::from_settings(self.secret_key.as_deref())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| crate::secrets::SecretError::NoKey.to_string())?;
        crate::secrets::open(&key, info.id, sealed).map_err(|e| e.to_string())
    }
}

/// A built channel and its rate limit (messages or SMS segments per second).
type BuiltChannel = (Arc<dyn Channel>, Option<f64>);

#[derive(Clone)]
pub struct ChannelRegistry {
    store: Store,
    receipts: Option<tokio::sync::mpsc::Sender<crate::store::Receipt>>,
    context: BuildContext,
    built: Arc<Mutex<HashMap<i64, BuiltChannel>>>,
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

    pub async fn get(&self, channel_id: i64) -> Result<Arc<dyn Channel>, StoreError> {
        Ok(self.get_with_rate(channel_id).await?.0)
    }

    /// The channel and its rate limit (messages or SMS segments per second), if any.
    pub async fn get_with_rate(&self, channel_id: i64) -> Result<BuiltChannel, StoreError> {
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
    pub async fn fresh(&self, channel_id: i64) -> Result<Arc<dyn Channel>, StoreError> {
        let info = self.store.channel(channel_id).await?;
        self.build(&info)
    }

    /// Drops the channel's cached build: the next send builds it again from its stored
    /// row (after an outage, with whatever configuration it has now).
    pub fn forget(&self, channel_id: i64) {
        if let Ok(mut built) = self.built.lock() {
            built.remove(&channel_id);
        }
    }

    fn build(&self, info: &ChannelInfo) -> Result<Arc<dyn Channel>, StoreError> {
        match info.kind.as_str() {
            "sandbox" => {
                let config = sandbox::SandboxConfig::from_json(&info.config)
                    .map_err(|e| StoreError::Invalid(format!("channel `{}`: {e}", info.name)))?;
                Ok(Arc::new(sandbox::SandboxChannel::new(
                    info.id,
                    info.name.clone(),
                    config,
                    self.store.clone(),
                    self.receipts.clone(),
                )))
            }
            "twilio" => twilio::TwilioChannel::build(info, &self.context)
                .map_err(|e| StoreError::Invalid(format!("channel `{}`: {e}", info.name))),
            "whatsapp" => whatsapp::WhatsAppChannel::build(info, &self.context)
                .map_err(|e| StoreError::Invalid(format!("channel `{}`: {e}", info.name))),
            "smtp" => smtp::SmtpChannel::build(info, &self.context)
                .map_err(|e| StoreError::Invalid(format!("channel `{}`: {e}", info.name))),
            other => Err(StoreError::Invalid(format!(
                "channel `{}` has kind `{other}`, which this herald cannot send through (known: {})",
                info.name,
                KINDS.join(", ")
            ))),
        }
    }
}
