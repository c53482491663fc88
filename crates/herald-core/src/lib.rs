//! The core of Herald: domain types, ids, addresses, templates, the clock, opt-out keywords,
//! secrets, signatures, configuration and the outbound address guard. Depends on no other
//! Herald crate; every other crate depends on it (docs/ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod address;
pub mod alerts;
pub mod channel_kind;
pub mod clock;
pub mod config;
pub mod contact_filter;
pub mod contact_rules;
pub mod credentials;
pub mod domain;
pub mod email_content;
pub mod email_feedback;
pub mod events;
pub mod ids;
pub mod optout;
pub mod outbound;
pub mod pricing;
pub mod reasons;
pub mod secrets;
pub mod segments;
pub mod send_window;
pub mod signatures;
pub mod telemetry;
pub mod template;
pub mod tracked_links;
pub mod unsubscribe_link;
pub mod webhook_admission;
pub mod whatsapp_template;
