//! Herald's command line (`herald …`, every command) and the HTTP server loop of `herald
//! serve`. It sits below the dashboard: `serve` is handed the router by the binary
//! (`cli::main(herald::http::router)`), so a change to a dashboard page recompiles the
//! dashboard and the binary's small router crate, not every command (docs/ARCHITECTURE.md).
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

pub mod cli;
pub mod server;
