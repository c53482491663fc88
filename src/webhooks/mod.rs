//! Webhooks in both directions: checking that a provider's callback (Twilio, WhatsApp) is
//! genuine before it may change a message's status, and signing the Standard Webhooks
//! events Herald sends out. `signature` is pure (no I/O, no clock); `inbound` serves the providers' callbacks.

pub mod inbound;
pub mod limit;
pub mod signature;
pub mod unsubscribe;
