//! Herald: a durable bulk-messaging campaign engine. See docs/DESIGN.md for the invariants this
//! crate exists to keep; `store` keeps them on disk, `engine` keeps them in motion.
#![forbid(unsafe_code)]

pub mod address;
pub mod alerts;
pub mod api;
pub mod app_state;
pub mod channel_kind;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contact_rules;
pub mod credentials;
pub mod doctor;
pub mod domain;
pub mod engine;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ids;
pub mod import;
pub mod layering;
pub mod optout;
pub mod outbound;
pub mod reasons;
pub mod secrets;
pub mod segments;
pub mod server;
pub mod signatures;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod unsubscribe_link;
pub mod web;
pub mod webhook_admission;
pub mod webhooks;
