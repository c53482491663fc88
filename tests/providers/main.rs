//! Provider tests: the real `herald` binary against stand-ins for its providers, over
//! loopback. The fake Twilio and fake WhatsApp Cloud API of `herald-fakes` (with signed
//! status callbacks into `herald serve`), Prism validating Herald's requests against the
//! vendors' OpenAPI specs, and a real SMTP server (aiosmtpd). Prism and aiosmtpd are
//! installed, pinned, into `target/tools` by `./scripts/test`; without them these tests
//! fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../process/support.rs"]
mod support;

mod contracts;
mod harness;
mod smtp;
mod twilio;
mod whatsapp;

use support::Backend;

/// A test on one store: `mod NAME { #[test] fn sqlite() }` calling `PATH(Backend::Sqlite)`.
macro_rules! sqlite_only {
    ($($name:ident => $path:path),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                $path($crate::Backend::Sqlite);
            }
        }
    )*};
}

/// The same on both stores.
macro_rules! both {
    ($($name:ident => $path:path),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                $path($crate::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                $path($crate::Backend::Postgres);
            }
        }
    )*};
}

// The Twilio flows, WhatsApp templates and replies, and email parts with Postmark feedback
// on both stores; the rest on SQLite.
both! {
    twilio_campaign_end_to_end => crate::twilio::twilio_campaign_end_to_end,
    twilio_shuffled_duplicated_callbacks => crate::twilio::twilio_shuffled_duplicated_callbacks,
    twilio_inbound_stop_start => crate::twilio::twilio_inbound_stop_start,
    whatsapp_campaign_templates => crate::whatsapp::whatsapp_campaign_templates,
    whatsapp_replies_are_answered => crate::whatsapp::whatsapp_replies_are_answered,
    smtp_email_parts_and_postmark_feedback => crate::smtp::smtp_email_parts_and_postmark_feedback,
}

sqlite_only! {
    whatsapp_campaign_end_to_end => crate::whatsapp::whatsapp_campaign_end_to_end,
    requests_match_the_openapi_specs => crate::contracts::requests_match_the_openapi_specs,
    smtp_against_a_real_server => crate::smtp::smtp_against_a_real_server,
}

/// An opt-out that arrives only in a `failed` status webhook (WhatsApp 131050) suppresses
/// the address just as one answered at send time does.
mod whatsapp_async_opt_out_suppresses {
    #[test]
    fn sqlite() {
        crate::whatsapp::whatsapp_async_opt_out_suppresses(crate::Backend::Sqlite);
    }
}
