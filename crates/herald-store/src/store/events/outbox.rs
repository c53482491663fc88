//! The outbox of outbound events (docs/EVENTS.md). `emit` writes an event inside the
//! transaction of the state change it reports: if that transaction rolls back, the event was
//! never there; if it commits, the event is stored before anyone can see the change. Delivery
//! to webhook endpoints and alerts reads from here, never from memory.

use crate::domain::{CampaignStatus, MessageStatus};
use crate::events::EventType;
use crate::ids::{CampaignId, ChannelId, ContactId, ListId, MessageId, NotificationId, OrgId};
use crate::store::{Dialect, Store, StoreError, Tx};
use sqlx::{AssertSqlSafe, Row};

/// One stored event, as deliveries read it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: NotificationId,
    pub org_id: OrgId,
    pub event_type: EventType,
    pub campaign_id: Option<CampaignId>,
    pub occurred_at: i64,
    /// The payload's `data` member.
    pub data: serde_json::Value,
}

impl OutboxEvent {
    /// The payload every endpoint receives: `{"type","timestamp","data"}` (Standard
    /// Webhooks' recommended shape); `seq` is the endpoint's sequence number for it.
    pub fn payload(&self, seq: Option<i64>) -> serde_json::Value {
        let mut payload = serde_json::json!({
            "type": self.event_type.as_str(),
            "timestamp": crate::clock::rfc3339(self.occurred_at),
            "data": self.data,
        });
        if let (Some(seq), Some(object)) = (seq, payload.as_object_mut()) {
            object.insert("seq".into(), seq.into());
        }
        payload
    }
}

/// Writes one event in `tx`. Message delivery events (`message.failed`, `.undelivered`,
/// `.delivered`) are written only while an enabled endpoint of the organisation names their
/// type, so a campaign nobody listens to pays one indexed lookup and no row for them.
pub(in crate::store) async fn emit(
    tx: &mut Tx,
    org_id: OrgId,
    event_type: EventType,
    campaign_id: Option<CampaignId>,
    occurred_at: i64,
    data: serde_json::Value,
) -> Result<(), StoreError> {
    let data = data.to_string();
    if event_type.is_message_delivery() {
        let pattern = format!("%\"{}\"%", event_type.as_str());
        sqlx::query(
            "INSERT INTO outbox_events (org_id, type, campaign_id, occurred_at, data) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhook_endpoints \
             WHERE org_id = $1 AND disabled_at IS NULL AND events LIKE $6)",
        )
        .bind(org_id)
        .bind(event_type.as_str())
        .bind(campaign_id)
        .bind(occurred_at)
        .bind(data)
        .bind(pattern)
        .execute(&mut **tx)
        .await?;
    } else {
        // An alert-worthy event waits for its alerts (store::alerts) from this moment.
        let alert_pending: Option<i64> = event_type.raises_alert().then_some(1);
        sqlx::query(
            "INSERT INTO outbox_events (org_id, type, campaign_id, occurred_at, data, alert_pending) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(org_id)
        .bind(event_type.as_str())
        .bind(campaign_id)
        .bind(occurred_at)
        .bind(data)
        .bind(alert_pending)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The event a campaign status change reports, if any: `(None, _)` is the creation,
/// `paused → sending` a resume, `draft/scheduled → sending` a start. An edit of a draft
/// (`draft → draft`) reports nothing.
pub(in crate::store) fn campaign_change_types(
    from: Option<CampaignStatus>,
    to: CampaignStatus,
) -> &'static [EventType] {
    use CampaignStatus as S;
    match (from, to) {
        (None, S::Scheduled) => &[EventType::CampaignCreated, EventType::CampaignScheduled],
        (None, _) => &[EventType::CampaignCreated],
        (Some(_), S::Scheduled) => &[EventType::CampaignScheduled],
        (Some(S::Paused), S::Sending) => &[EventType::CampaignResumed],
        (Some(_), S::Sending) => &[EventType::CampaignStarted],
        (Some(_), S::Paused) => &[EventType::CampaignPaused],
        (Some(_), S::Cancelled) => &[EventType::CampaignCancelled],
        (Some(_), S::Completed) => &[EventType::CampaignCompleted],
        (Some(_), S::Draft) => &[],
    }
}

/// One change of a campaign's status, as `insert_event` records it in the audit trail.
pub(in crate::store) struct CampaignChange<'a> {
    pub campaign_id: CampaignId,
    pub at: i64,
    pub actor: &'a str,
    pub from: Option<CampaignStatus>,
    pub to: CampaignStatus,
    pub reason: &'a str,
}

/// Writes the events a campaign status change reports, in its transaction: the campaign
/// as it is now in `tx` (a completed or cancelled one with its outcome and final
/// counters), who changed it, from what, and why.
pub(in crate::store) async fn emit_campaign_change(
    tx: &mut Tx,
    change: &CampaignChange<'_>,
) -> Result<(), StoreError> {
    let types = campaign_change_types(change.from, change.to);
    if types.is_empty() {
        return Ok(());
    }
    let row = sqlx::query(
        "SELECT org_id, name, channel_id, list_id, status, scheduled_at, total, queued, in_flight, \
         retry_wait, sent, delivered, read, undelivered, failed, skipped, cancelled, in_doubt, outcome \
         FROM campaigns WHERE id = $1",
    )
    .bind(change.campaign_id)
    .fetch_one(&mut **tx)
    .await?;
    let org_id: OrgId = row.try_get("org_id")?;
    let mut campaign = serde_json::json!({
        "id": change.campaign_id.to_string(),
        "name": row.try_get::<String, _>("name")?,
        "channel_id": ChannelId(row.try_get("channel_id")?).to_string(),
        "list_id": ListId(row.try_get("list_id")?).to_string(),
        "status": row.try_get::<String, _>("status")?,
    });
    if let Some(at) = row.try_get::<Option<i64>, _>("scheduled_at")? {
        campaign["scheduled_at"] = crate::clock::rfc3339(at).into();
    }
    if change.to.is_terminal() {
        let mut counts = serde_json::Map::new();
        counts.insert("total".into(), row.try_get::<i64, _>("total")?.into());
        for s in MessageStatus::ALL {
            counts.insert(s.as_str().into(), row.try_get::<i64, _>(s.as_str())?.into());
        }
        campaign["outcome"] = row.try_get::<Option<String>, _>("outcome")?.into();
        campaign["counts"] = counts.into();
    }
    let data = serde_json::json!({
        "campaign": campaign,
        "from_status": change.from.map(|s| s.as_str()),
        "actor": change.actor,
        "reason": change.reason,
    });
    for t in types {
        emit(
            tx,
            org_id,
            *t,
            Some(change.campaign_id),
            change.at,
            data.clone(),
        )
        .await?;
    }
    Ok(())
}

/// How an address came to be unsubscribed or resubscribed, for the contact events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSource<'a> {
    /// `keyword`, `link`, `provider_code`, `provider_opt_out`, `bounce`, `complaint`, `api`,
    /// `contact_update`.
    pub source: &'a str,
    /// The channel it came through, when one did.
    pub channel_id: Option<ChannelId>,
    /// The keyword (`STOP`) or the provider's code (`21610`), when there is one.
    pub detail: Option<&'a str>,
}

impl<'a> OptSource<'a> {
    pub const API: OptSource<'static> = OptSource {
        source: "api",
        channel_id: None,
        detail: None,
    };

    pub fn new(source: &'a str, channel_id: Option<ChannelId>, detail: Option<&'a str>) -> Self {
        OptSource {
            source,
            channel_id,
            detail,
        }
    }
}

/// Writes `contact.unsubscribed` or `contact.resubscribed` for `address` in `tx`, naming
/// the organisation's contact with that address when there is one.
pub(in crate::store) async fn emit_contact_change(
    tx: &mut Tx,
    org_id: OrgId,
    address: &str,
    unsubscribed: bool,
    via: &OptSource<'_>,
    reason: Option<&str>,
    at: i64,
) -> Result<(), StoreError> {
    let contact: Option<ContactId> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(address)
            .fetch_optional(&mut **tx)
            .await?;
    let mut data = serde_json::json!({
        "contact": {
            "id": contact.map(|id| id.to_string()),
            "address": address,
        },
        "channel_id": via.channel_id.map(|id| id.to_string()),
        "source": via.source,
    });
    if let Some(detail) = via.detail {
        let key = if via.source == "keyword" {
            "keyword"
        } else {
            "code"
        };
        data[key] = detail.into();
    }
    if let Some(reason) = reason {
        data["reason"] = reason.into();
    }
    let event_type = if unsubscribed {
        EventType::ContactUnsubscribed
    } else {
        EventType::ContactResubscribed
    };
    emit(tx, org_id, event_type, None, at, data).await
}

/// One inbound message a provider webhook carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The sender, normalised like the suppression list keys it.
    pub from: String,
    pub body: String,
    /// Twilio's MessageSid, WhatsApp's message id: what makes a provider retry the same.
    pub provider_message_id: Option<String>,
    /// `help`, `stop` or `start` when the whole text is that keyword (`optout::keyword`).
    /// A STOP or START is a contact event, not `message.inbound`; every one is a reply.
    pub keyword: Option<&'static str>,
    /// What Herald answers, when it does.
    pub auto_reply: Option<String>,
    /// How the answer goes (`replies.auto_reply_status`): `in_webhook_answer`, `pending`,
    /// or `provider_confirms` with no answer of Herald's.
    pub auto_reply_status: Option<String>,
}

/// The longest inbound body an event carries (ten SMS segments); longer ones are cut and
/// marked `body_truncated`.
pub const INBOUND_BODY_MAX_CHARS: usize = 1_600;

/// Writes `message.inbound` for `m` in `tx`: the channel, the sender, the organisation's
/// contact with that address and the campaign last sent to it on this channel (one
/// indexed probe per campaign of the channel), when there are.
pub(in crate::store) async fn emit_inbound(
    tx: &mut Tx,
    org_id: OrgId,
    channel_id: ChannelId,
    m: &InboundMessage,
    at: i64,
    (contact, campaign): (Option<ContactId>, Option<CampaignId>),
) -> Result<(), StoreError> {
    let body: String = m.body.chars().take(INBOUND_BODY_MAX_CHARS).collect();
    let truncated = body.len() < m.body.len();
    let data = serde_json::json!({
        "message": {
            "channel_id": channel_id.to_string(),
            "from": m.from,
            "contact_id": contact.map(|id| id.to_string()),
            "body": body,
            "body_truncated": truncated,
            "provider_message_id": m.provider_message_id,
            "campaign_id": campaign.map(|id| id.to_string()),
        }
    });
    emit(tx, org_id, EventType::MessageInbound, campaign, at, data).await
}

/// The organisation's contact with the sender's address and the campaign last sent to it
/// on this channel (one indexed probe per campaign of the channel), when there are.
pub(in crate::store) async fn inbound_context(
    tx: &mut Tx,
    org_id: OrgId,
    channel_id: ChannelId,
    m: &InboundMessage,
) -> Result<(Option<ContactId>, Option<CampaignId>), StoreError> {
    let contact: Option<ContactId> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(&m.from)
            .fetch_optional(&mut **tx)
            .await?;
    let campaign: Option<CampaignId> = sqlx::query_scalar(
        "SELECT m.campaign_id FROM campaigns c JOIN messages m ON m.campaign_id = c.id AND m.address = $3 \
         WHERE c.org_id = $1 AND c.channel_id = $2 AND m.sent_at IS NOT NULL \
         ORDER BY m.sent_at DESC, m.id DESC LIMIT 1",
    )
    .bind(org_id)
    .bind(channel_id)
    .bind(&m.from)
    .fetch_optional(&mut **tx)
    .await?;
    Ok((contact, campaign))
}

/// The JSON object of one message event, built by the database from the message row
/// as it is in the transaction (so the SQL is one statement per batch).
fn message_data_sql(dialect: Dialect) -> String {
    let prefixed = |prefix: &str, col: &str| format!("'{prefix}_' || {col}");
    let members = format!(
        "'id', {}, 'campaign_id', {}, 'channel_id', {}, 'contact_id', \
         CASE WHEN m.contact_id IS NULL THEN NULL ELSE {} END, 'address', m.address, \
         'status', m.status, 'provider_id', m.provider_id, 'error', m.last_error, 'attempts', m.attempts",
        prefixed(MessageId::PREFIX, "m.id"),
        prefixed(CampaignId::PREFIX, "m.campaign_id"),
        prefixed(ChannelId::PREFIX, "c.channel_id"),
        prefixed(ContactId::PREFIX, "m.contact_id"),
    );
    dialect.json_object_text(&format!("'message', {}", dialect.json_object(&members)))
}

impl Store {
    /// Writes the message delivery events of one batch in `tx`, in one statement: each
    /// `(message id, type)` becomes an event of its campaign's organisation only while an
    /// enabled endpoint of that organisation names the type. No subscriber, no row (and,
    /// when no enabled endpoint anywhere names the type, nothing beyond one read of the
    /// endpoints).
    pub(in crate::store) async fn emit_message_events(
        &self,
        tx: &mut Tx,
        at: i64,
        events: &[(MessageId, EventType)],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // One probe per type first (a batch holds one or two): with no enabled endpoint
        // naming a type anywhere, its events cost no join and no per-row check.
        let mut types: Vec<EventType> = events.iter().map(|(_, t)| *t).collect();
        types.sort();
        types.dedup();
        let mut wanted = Vec::with_capacity(types.len());
        for t in types {
            let named: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL AND events LIKE $1 LIMIT 1",
            )
            .bind(format!("%\"{}\"%", t.as_str()))
            .fetch_optional(&mut **tx)
            .await?;
            if named.is_some() {
                wanted.push(t);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let records: Vec<serde_json::Value> = events
            .iter()
            .filter(|(_, t)| wanted.contains(t))
            .map(|(id, t)| {
                serde_json::json!({
                    "id": id.get(),
                    "type": t.as_str(),
                    "pattern": format!("%\"{}\"%", t.as_str()),
                })
            })
            .collect();
        let recs = self.dialect.json_records(
            "$1",
            &[("id", "int"), ("type", "text"), ("pattern", "text")],
        );
        let sql = format!(
            "INSERT INTO outbox_events (org_id, type, campaign_id, occurred_at, data) \
             SELECT c.org_id, x.type, m.campaign_id, $2, {} FROM {recs} \
             JOIN messages m ON m.id = x.id JOIN campaigns c ON c.id = m.campaign_id \
             WHERE EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.org_id = c.org_id \
             AND w.disabled_at IS NULL AND w.events LIKE x.pattern) ORDER BY m.id",
            message_data_sql(self.dialect)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(serde_json::Value::from(records).to_string())
            .bind(at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

pub(in crate::store) fn outbox_event_from_row(
    row: &sqlx::any::AnyRow,
) -> Result<OutboxEvent, StoreError> {
    let type_name: String = row.try_get("type")?;
    let event_type = type_name
        .parse::<EventType>()
        .map_err(|e| StoreError::Corrupt(format!("outbox event type: {e}")))?;
    let data: String = row.try_get("data")?;
    Ok(OutboxEvent {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        event_type,
        campaign_id: row.try_get("campaign_id")?,
        occurred_at: row.try_get("occurred_at")?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("outbox event data: {e}")))?,
    })
}

impl Store {
    /// An organisation's events after `after_id`, oldest first, at most `limit`.
    pub async fn outbox_events_after(
        &self,
        org_id: OrgId,
        after_id: NotificationId,
        limit: i64,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, type, campaign_id, occurred_at, data FROM outbox_events \
             WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(org_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(outbox_event_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CampaignStatus as S;

    #[test]
    fn every_status_change_maps_to_its_event() {
        let cases: &[(Option<S>, S, &[EventType])] = &[
            (None, S::Draft, &[EventType::CampaignCreated]),
            (
                None,
                S::Scheduled,
                &[EventType::CampaignCreated, EventType::CampaignScheduled],
            ),
            (Some(S::Draft), S::Draft, &[]),
            (
                Some(S::Draft),
                S::Scheduled,
                &[EventType::CampaignScheduled],
            ),
            (
                Some(S::Scheduled),
                S::Scheduled,
                &[EventType::CampaignScheduled],
            ),
            (Some(S::Draft), S::Sending, &[EventType::CampaignStarted]),
            (
                Some(S::Scheduled),
                S::Sending,
                &[EventType::CampaignStarted],
            ),
            (Some(S::Paused), S::Sending, &[EventType::CampaignResumed]),
            (Some(S::Sending), S::Paused, &[EventType::CampaignPaused]),
            (
                Some(S::Sending),
                S::Cancelled,
                &[EventType::CampaignCancelled],
            ),
            (
                Some(S::Paused),
                S::Cancelled,
                &[EventType::CampaignCancelled],
            ),
            (
                Some(S::Sending),
                S::Completed,
                &[EventType::CampaignCompleted],
            ),
            (
                Some(S::Paused),
                S::Completed,
                &[EventType::CampaignCompleted],
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                campaign_change_types(*from, *to),
                *expected,
                "{from:?} -> {to:?}"
            );
        }
    }
}
