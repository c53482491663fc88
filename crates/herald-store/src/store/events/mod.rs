//! Events: the outbox of outbound events and what reads it (webhook endpoints, their
//! deliveries, alerts to people), and the webhooks received from providers with the replies
//! they carried.

pub mod alerts;
pub(super) mod outbox;
pub mod provider_webhooks;
pub mod replies;
mod retention;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
