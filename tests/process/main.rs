//! Process-level tests: the real `herald` binary, run as child processes against a fresh
//! SQLite file and a fresh PostgreSQL database, including SIGKILL and SIGTERM mid-campaign.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod accounts;
mod alerts;
mod autopause;
mod bench;
mod campaigns;
mod cli;
mod crash;
mod ids;
mod links;
mod metrics;
mod outage;
mod prometheus_rules;
mod segments;
mod send_windows;
mod slow_clients;
mod webhooks;
mod webhooks_out;
