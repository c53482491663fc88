//! Sending: the claim of due messages, the record of their outcomes, provider receipts, and
//! the sandbox provider's own record of what it received.

mod claim;
mod receipts;
mod record;
mod sandbox;

pub use receipts::KEPT_RECEIPT_BATCH;
