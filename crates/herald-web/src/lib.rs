//! Herald's dashboard: server-rendered pages over the API router, sessions and assets.
#![forbid(unsafe_code)]

// Lower layers' modules, re-exported so that `crate::<module>` paths read the same in
// every crate (docs/ARCHITECTURE.md).
pub use herald_api::{api, app_state, webhooks};
pub use herald_channels::{channels, export, import};
pub use herald_core::{
    address, alerts, channel_kind, clock, config, contact_filter, contact_rules, credentials,
    domain, email_content, email_feedback, events, ids, optout, outbound, pricing, reasons,
    secrets, segments, send_window, signatures, telemetry, template, tracked_links,
    unsubscribe_link, webhook_admission, whatsapp_template,
};
pub use herald_engine::{doctor, engine, estimate};
pub use herald_store::store;

pub mod web;
