//! Sending: the claim of due messages, the record of their outcomes, provider receipts
//! (email bounces and complaints among them), and the sandbox provider's own record of
//! what it received.

mod bounces;
mod claim;
mod receipts;
mod record;
mod sandbox;

pub use bounces::FeedbackReport;
pub use receipts::KEPT_RECEIPT_BATCH;
