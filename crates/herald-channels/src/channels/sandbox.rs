//! The sandbox channel: a simulated provider, built in, with configurable latency, failure
//! rates and delivery receipts.
//!
//! Every send it accepts is recorded on the provider's side (`sandbox_received`) before it
//! answers, independently of Herald's own outcome write, exactly as a real provider would
//! hold it. So a test can count what was really "sent" and find duplicates and losses even
//! when Herald is killed between the provider's answer and its own commit. Recording is
//! group-committed: concurrent sends share one transaction.

use super::settings::{self, Checked, Flags, KindRules, NoSecrets, Validate};
use super::{
    BoxFuture, BuildInputs, Channel, ChannelError, Implementation, SendRequest, SendResult,
};
use crate::channel_kind::{ChannelKind, sandbox::KIND};
use crate::domain::MessageStatus;
use crate::ids::ChannelId;
use crate::store::{ChannelInfo, Receipt, SandboxEntry, Store};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The sandbox's registration (`super::IMPLEMENTATIONS`).
pub const IMPLEMENTATION: Implementation = Implementation {
    kind: KIND,
    build,
    check: settings::check::<Rules>,
    from_flags,
};

/// The sandbox's settings: a configuration, no secrets.
pub struct Rules;

impl KindRules for Rules {
    const KIND: ChannelKind = KIND;
    type Config = SandboxConfig;
    type Secrets = NoSecrets;
}

fn build(info: &ChannelInfo, inputs: &BuildInputs<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
    let config = SandboxConfig::from_json(&info.config)?;
    Ok(Arc::new(SandboxChannel::new(
        info.id,
        info.name.clone(),
        config,
        inputs.store.clone(),
        inputs.receipts.clone(),
    )))
}

/// `herald channel create --kind sandbox`: every flag has a default.
fn from_flags(flags: &Flags) -> Result<Checked, ChannelError> {
    let config = SandboxConfig {
        latency_ms: flags.get("latency_ms").unwrap_or(0),
        fail_rate: flags.number("fail_rate").unwrap_or(0.0),
        permanent_fail_rate: flags.number("permanent_fail_rate").unwrap_or(0.0),
        delivery_delay_ms: flags.get("delivery_delay_ms"),
        unreachable: flags.set("unreachable"),
    };
    config.validate()?;
    Ok(settings::checked(&config, &NoSecrets {})?)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Simulated provider round trip.
    #[serde(default)]
    pub latency_ms: u64,
    /// Probability (0..=1) that a send fails transiently (like a provider 503).
    #[serde(default)]
    pub fail_rate: f64,
    /// Probability (0..=1) that a send fails permanently (like an invalid number).
    #[serde(default)]
    pub permanent_fail_rate: f64,
    /// When set, a `delivered` receipt follows each accepted send after this delay.
    #[serde(default)]
    pub delivery_delay_ms: Option<u64>,
    /// Simulates a provider outage: every send and every probe finds the provider
    /// unreachable (connection refused), and nothing is recorded as received.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreachable: bool,
}

impl SandboxConfig {
    pub fn from_json(v: &serde_json::Value) -> Result<SandboxConfig, ChannelError> {
        let c: SandboxConfig = serde_json::from_value(v.clone())
            .map_err(|e| ChannelError::settings(format!("invalid {KIND} configuration: {e}")))?;
        c.validate()?;
        Ok(c)
    }
}

impl Validate for SandboxConfig {
    fn validate(&self) -> Result<(), ChannelError> {
        for (name, rate) in [
            ("--fail-rate", self.fail_rate),
            ("--permanent-fail-rate", self.permanent_fail_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ChannelError::settings(format!(
                    "{name} {rate} is not a probability: give a number from 0 to 1, e.g. 0.05"
                )));
            }
        }
        if self.fail_rate + self.permanent_fail_rate > 1.0 {
            return Err(ChannelError::settings(format!(
                "--fail-rate {} plus --permanent-fail-rate {} exceed 1: together they must be at most 1",
                self.fail_rate, self.permanent_fail_rate
            )));
        }
        Ok(())
    }
}

struct Pending {
    entry: SandboxEntry,
    done: oneshot::Sender<bool>,
}

pub struct SandboxChannel {
    channel_id: ChannelId,
    name: String,
    config: SandboxConfig,
    recorder: mpsc::Sender<Pending>,
    receipts: Option<mpsc::Sender<Receipt>>,
}

impl SandboxChannel {
    pub fn new(
        channel_id: ChannelId,
        name: String,
        config: SandboxConfig,
        store: Store,
        receipts: Option<mpsc::Sender<Receipt>>,
    ) -> SandboxChannel {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(record_loop(store, rx));
        SandboxChannel {
            channel_id,
            name,
            config,
            recorder: tx,
            receipts,
        }
    }
}

/// The provider's own durable record, group-committed.
async fn record_loop(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let entries: Vec<SandboxEntry> = batch.iter().map(|p| p.entry.clone()).collect();
        let mut ok = false;
        for attempt in 0..50u32 {
            match store.sandbox_record(&entries).await {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "sandbox provider could not record sends; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1).min(10)))
                        .await;
                }
            }
        }
        for p in batch.drain(..) {
            let _ = p.done.send(ok);
        }
    }
}

impl Channel for SandboxChannel {
    fn kind(&self) -> ChannelKind {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, request: SendRequest) -> BoxFuture<'_, SendResult> {
        Box::pin(async move {
            // The provider's answer comes `latency_ms` after the request; an accepted
            // message is recorded meanwhile, as a real provider stores it before it
            // answers, so the record's commit is inside the latency, not added to it.
            let answer_at =
                tokio::time::Instant::now() + Duration::from_millis(self.config.latency_ms);
            let answer = || tokio::time::sleep_until(answer_at);
            if self.config.unreachable {
                answer().await;
                return SendResult::Unreachable {
                    error: UNREACHABLE.to_string(),
                };
            }
            let roll: f64 = rand::rng().random();
            if roll < self.config.permanent_fail_rate + self.config.fail_rate {
                answer().await;
            }
            if roll < self.config.permanent_fail_rate {
                return SendResult::Permanent {
                    error: format!(
                        "sandbox: simulated permanent failure for {}",
                        request.address
                    ),
                };
            }
            if roll < self.config.permanent_fail_rate + self.config.fail_rate {
                return SendResult::Transient {
                    error: "sandbox: simulated transient failure (503)".to_string(),
                    retry_after: None,
                };
            }
            let provider_id = format!(
                "SB{}x{}{:08x}",
                request.message_id.get(),
                request.attempt,
                rand::rng().random::<u32>()
            );
            let (done, accepted) = oneshot::channel();
            let entry = SandboxEntry {
                channel_id: self.channel_id,
                campaign_id: request.campaign_id,
                message_id: request.message_id,
                address: request.address,
                provider_id: provider_id.clone(),
                body: request.body,
                received_at: crate::clock::now_ms(),
            };
            if self.recorder.send(Pending { entry, done }).await.is_err() {
                answer().await;
                return SendResult::Transient {
                    error: "sandbox: provider unavailable".into(),
                    retry_after: None,
                };
            }
            let (accepted, ()) = tokio::join!(accepted, answer());
            match accepted {
                Ok(true) => {}
                _ => {
                    return SendResult::Transient {
                        error: "sandbox: provider could not store the message".into(),
                        retry_after: None,
                    };
                }
            }
            if let (Some(delay), Some(receipts)) = (self.config.delivery_delay_ms, &self.receipts) {
                let receipts = receipts.clone();
                let provider_id = provider_id.clone();
                let channel_id = self.channel_id;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let _ = receipts
                        .send(Receipt {
                            channel_id,
                            provider_id,
                            status: MessageStatus::Delivered,
                            error: None,
                        })
                        .await;
                });
            }
            SendResult::Accepted { provider_id }
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), ChannelError>> {
        Box::pin(async move {
            if self.config.unreachable {
                Err(ChannelError::provider(UNREACHABLE))
            } else {
                Ok(())
            }
        })
    }
}

/// What a send through a sandbox simulating an outage answers.
const UNREACHABLE: &str = "sandbox: simulated outage: could not connect: Connection refused";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_bad_rates() {
        let bad = SandboxConfig {
            fail_rate: 1.5,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().mentions("--fail-rate"));
        let sum = SandboxConfig {
            fail_rate: 0.6,
            permanent_fail_rate: 0.6,
            ..Default::default()
        };
        assert!(sum.validate().is_err());
        assert!(SandboxConfig::from_json(&serde_json::json!({"latency_ms": 5})).is_ok());
        assert!(SandboxConfig::from_json(&serde_json::json!({"latency": 5})).is_err());
    }
}
