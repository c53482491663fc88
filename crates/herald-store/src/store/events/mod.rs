//! Events: the outbox of outbound events and what reads it (webhook endpoints, their
//! deliveries, alerts to people), and the webhooks received from providers.

pub mod alerts;
pub(super) mod outbox;
mod provider_webhooks;
mod retention;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
