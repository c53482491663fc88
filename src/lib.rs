//! Herald: a durable bulk-messaging campaign engine. See docs/DESIGN.md for the invariants this
//! workspace exists to keep and docs/ARCHITECTURE.md for its crates; this crate is the top:
//! the `herald` binary's CLI and the HTTP server, over every other crate.
#![forbid(unsafe_code)]

// Every layer's modules, re-exported so that `herald::<module>` and `crate::<module>` paths
// read the same as before the workspace (tests, fuzz targets).
pub use herald_api::{api, app_state, webhooks};
pub use herald_channels::{channels, export, import};
pub use herald_cli::{cli, server};
pub use herald_core::{
    address, alerts, channel_kind, clock, config, contact_filter, contact_rules, credentials,
    domain, email_content, email_feedback, events, ids, optout, outbound, pricing, reasons,
    secrets, segments, send_window, signatures, telemetry, template, tracked_links,
    unsubscribe_link, webhook_admission, whatsapp_template,
};
pub use herald_engine::{doctor, engine, estimate};
pub use herald_store::store;
pub use herald_web::web;

#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod layering;
