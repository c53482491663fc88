//! The sandbox: a simulated provider built into Herald, which sends nothing. Its channel is
//! crates/herald-channels/src/channels/sandbox.rs.

use super::{ChannelKind, ChannelKindDescriptor, Field, InDoubtWait, Input};

pub const NAME: &str = "sandbox";

pub const KIND: ChannelKind = ChannelKind(&DESCRIPTOR);

pub const DESCRIPTOR: ChannelKindDescriptor = ChannelKindDescriptor {
    name: NAME,
    label: "Sandbox (simulated provider, sends nothing)",
    address: None,
    sms_segments: false,
    fields: &[
        Field::new("latency_ms", "Latency (ms)", Input::Number)
            .hint("Simulated provider round trip per message."),
        Field::new(
            "fail_rate",
            "Transient failure rate (0 to 1)",
            Input::Number,
        )
        .hint("Share of sends that fail and are retried, e.g. 0.05."),
        Field::new(
            "permanent_fail_rate",
            "Permanent failure rate (0 to 1)",
            Input::Number,
        )
        .hint("Share of sends that fail for good."),
        Field::new(
            "delivery_delay_ms",
            "Delivery receipt after (ms)",
            Input::Number,
        )
        .hint("Leave empty for no delivery receipts."),
        Field::new("unreachable", "Simulate an outage", Input::Checkbox).hidden(),
    ],
    in_doubt_wait: InDoubtWait::None,
    webhooks: &[],
};
