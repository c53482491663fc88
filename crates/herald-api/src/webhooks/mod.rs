//! Webhooks in both directions: checking that a provider's callback (Twilio, WhatsApp) is
//! genuine before it may change a message's status, and signing the Standard Webhooks
//! events Herald sends out. `signature` is pure (no I/O, no clock); `inbound` serves the providers' callbacks.

pub mod email;
pub mod inbound;
pub mod links;
// Moved below the HTTP side; the old paths stay for their callers.
pub use crate::signatures as signature;
pub use crate::webhook_admission as limit;
pub mod unsubscribe;
