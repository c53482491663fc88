//! The catalogue of Herald's outbound events (docs/EVENTS.md): what an organisation's webhook
//! endpoints and alerts can be told. Events are written to the outbox by the store, in the
//! transaction of the change they report (`store::events::outbox`); deliveries read them from
//! there.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! event_types {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// One type of outbound event. Its wire name (`campaign.completed`) is the payload's
        /// `type` and what an endpoint subscribes to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $(#[doc = $doc] $variant,)*
        }

        impl EventType {
            /// Every type, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// One sentence on when the event happens, for help texts and the API document.
            pub fn description(self) -> &'static str {
                match self {
                    $(EventType::$variant => $doc,)*
                }
            }
        }
    };
}

event_types! {
    CampaignCreated => "campaign.created", "A campaign was created (as a draft).";
    CampaignScheduled => "campaign.scheduled", "A campaign was scheduled to start at a given time.";
    CampaignStarted => "campaign.started", "A campaign started sending (by a person or its schedule).";
    CampaignPaused => "campaign.paused", "A campaign was paused (by a person, or by the engine with its reason).";
    CampaignResumed => "campaign.resumed", "A paused campaign resumed sending.";
    CampaignCancelled => "campaign.cancelled", "A campaign was cancelled; its unsent messages will not be sent.";
    CampaignCompleted => "campaign.completed", "A campaign ended, with its outcome and final counters.";
    CampaignStuck => "campaign.stuck", "A sending campaign made no progress for the stuck threshold; the engine's reason.";
    CampaignUnstuck => "campaign.unstuck", "A campaign reported stuck made progress again.";
    CampaignAutoPaused => "campaign.auto_paused", "The engine paused a campaign whose permanent failure rate crossed its threshold.";
    CampaignInDoubt => "campaign.in_doubt", "A sending campaign's messages in doubt (sent, the provider's answer unknown) reached its organisation's alert threshold.";
    ChannelUnavailable => "channel.unavailable", "A channel's provider stopped answering; its campaigns are paused.";
    ChannelAvailable => "channel.available", "A channel's provider answers again; its campaigns resume.";
    ContactUnsubscribed => "contact.unsubscribed", "A contact opted out (keyword, unsubscribe link or provider code).";
    ContactResubscribed => "contact.resubscribed", "A contact opted back in.";
    MessageFailed => "message.failed", "A message failed permanently (off unless an endpoint names it).";
    MessageUndelivered => "message.undelivered", "The provider reported a sent message undelivered (off unless an endpoint names it).";
    MessageDelivered => "message.delivered", "The provider reported a message delivered (off unless an endpoint names it).";
    MessageInbound => "message.inbound", "A contact sent a message to a channel.";
    WebhookEndpointDisabled => "webhook.endpoint_disabled", "A webhook endpoint was disabled (410 Gone, or failing for 5 days).";
    WebhookTest => "webhook.test", "A test event sent on request to one endpoint; never fanned out to others.";
}

impl EventType {
    /// The high-volume delivery events: written only while an endpoint of the organisation
    /// names them, and never part of an endpoint's default subscription.
    pub fn is_message_delivery(self) -> bool {
        matches!(
            self,
            EventType::MessageFailed | EventType::MessageUndelivered | EventType::MessageDelivered
        )
    }

    /// Whether it becomes an alert to the organisation's alert recipients (docs/ALERTS.md):
    /// the events that say a person should look now.
    pub fn raises_alert(self) -> bool {
        matches!(
            self,
            EventType::CampaignStuck
                | EventType::CampaignAutoPaused
                | EventType::CampaignInDoubt
                | EventType::ChannelUnavailable
                | EventType::WebhookEndpointDisabled
        )
    }

    /// Whether an endpoint can subscribe to it: every type but `webhook.test`, which goes
    /// only to the endpoint it was made for.
    pub fn is_subscribable(self) -> bool {
        self != EventType::WebhookTest
    }

    /// What an endpoint created without an explicit list receives: every subscribable type
    /// except the three message delivery events.
    pub fn default_subscription() -> Vec<EventType> {
        EventType::ALL
            .iter()
            .copied()
            .filter(|t| t.is_subscribable() && !t.is_message_delivery())
            .collect()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event type name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEventType(pub String);

impl fmt::Display for UnknownEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        write!(
            f,
            "`{}` is not an event type; use one of: {}",
            self.0.chars().take(64).collect::<String>(),
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownEventType {}

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_its_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(*t));
            assert_eq!(serde_json::to_string(t).ok(), Some(format!("\"{t}\"")));
        }
        assert_eq!(EventType::ALL.len(), 21);
    }

    #[test]
    fn the_default_subscription_leaves_out_message_deliveries_only() {
        let defaults = EventType::default_subscription();
        assert!(defaults.contains(&EventType::MessageInbound));
        assert!(defaults.contains(&EventType::CampaignCompleted));
        assert!(!defaults.contains(&EventType::MessageDelivered));
        assert!(!defaults.contains(&EventType::WebhookTest));
        assert_eq!(defaults.len(), EventType::ALL.len() - 4);
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_catalogue() {
        let err = "campaign.finished".parse::<EventType>().unwrap_err();
        assert!(err.to_string().contains("campaign.completed"), "{err}");
    }
}
