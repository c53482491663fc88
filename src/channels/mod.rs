//! Channels: how a message leaves Herald. Each kind lives in its own file; the engine sees
//! only the `Channel` trait and the classification of a send's result.

pub mod classify;
pub mod sandbox;
pub mod segments;

use crate::address::AddressKind;
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
}

pub trait Channel: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The channel's name, for logs and metric labels.
    fn name(&self) -> &str;
    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult>;
}

/// The kinds Herald knows, and which addresses each can deliver to.
pub const KINDS: &[&str] = &["sandbox"];

/// The address kind a channel kind requires; None when it takes any.
pub fn address_requirement(kind: &str) -> Option<AddressKind> {
    match kind {
        "twilio" | "whatsapp" | "sms" => Some(AddressKind::Phone),
        "smtp" | "email" => Some(AddressKind::Email),
        _ => None,
    }
}

/// Builds each channel once per process from its stored configuration.
#[derive(Clone)]
pub struct ChannelRegistry {
    store: Store,
    receipts: Option<tokio::sync::mpsc::Sender<crate::store::Receipt>>,
    built: Arc<Mutex<HashMap<i64, Arc<dyn Channel>>>>,
}

impl ChannelRegistry {
    /// `receipts` receives simulated delivery receipts (sandbox) to apply to the store.
    pub fn new(
        store: Store,
        receipts: Option<tokio::sync::mpsc::Sender<crate::store::Receipt>>,
    ) -> ChannelRegistry {
        ChannelRegistry {
            store,
            receipts,
            built: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub async fn get(&self, channel_id: i64) -> Result<Arc<dyn Channel>, StoreError> {
        if let Some(c) = self
            .built
            .lock()
            .map_err(|_| StoreError::Invalid("channel registry poisoned".into()))?
            .get(&channel_id)
        {
            return Ok(c.clone());
        }
        let info = self.store.channel(channel_id).await?;
        let channel = self.build(&info)?;
        self.built
            .lock()
            .map_err(|_| StoreError::Invalid("channel registry poisoned".into()))?
            .insert(channel_id, channel.clone());
        Ok(channel)
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
            other => Err(StoreError::Invalid(format!(
                "channel `{}` has kind `{other}`, which this herald cannot send through (known: {})",
                info.name,
                KINDS.join(", ")
            ))),
        }
    }
}
