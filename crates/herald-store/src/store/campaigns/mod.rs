//! Campaigns: their lifecycle and counters, how they are read back, and what is recorded
//! about how they go (outcome and throughput, failures, the stuck mark, auto-pause).

mod admin;
pub mod archive;
pub mod audience;
pub mod autopause;
pub mod derive;
pub mod export;
mod failures;
pub(super) mod lifecycle;
pub mod links;
mod order;
pub(super) mod outcomes;
pub(super) mod reads;
mod stuck;
pub mod windows;
