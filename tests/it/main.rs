//! The integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod alerts;
mod api;
mod autopause;
mod database_sockets;
mod email_feedback;
mod engine;
mod events;
mod outage;
mod outcomes;
mod retention;
mod send_windows;
mod simulation;
mod store_conformance;
mod webhook_security;
mod webhooks;
mod webhooks_out;
