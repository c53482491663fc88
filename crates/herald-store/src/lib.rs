//! Herald's store: every durable state change as a conditional write, on SQLite or
//! PostgreSQL (docs/DESIGN.md). Depends only on herald-core.
#![forbid(unsafe_code)]

// Lower layers' modules, re-exported so that `crate::<module>` paths read the same in
// every crate (docs/ARCHITECTURE.md).
pub use herald_core::{
    address, alerts, channel_kind, clock, config, contact_filter, contact_rules, credentials,
    domain, email_content, email_feedback, events, ids, optout, outbound, pricing, reasons,
    secrets, segments, send_window, signatures, telemetry, template, tracked_links,
    unsubscribe_link, webhook_admission, whatsapp_template,
};

pub mod store;
