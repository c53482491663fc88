//! Webhooks in both directions: checking that a provider's callback (Twilio, WhatsApp) is
//! genuine before it may change a message's status, and signing the Standard Webhooks
//! events Herald sends out. Everything here is pure: no I/O, no clock.

pub mod signature;
