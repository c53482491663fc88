//! The outbox of outbound events (docs/EVENTS.md). `emit` writes an event inside the
//! transaction of the state change it reports: if that transaction rolls back, the event was
//! never there; if it commits, the event is stored before anyone can see the change. Delivery
//! to webhook endpoints and alerts reads from here, never from memory.

use super::{Store, StoreError, Tx};
use crate::events::EventType;
use sqlx::Row;

/// One stored event, as deliveries read it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: i64,
    pub org_id: i64,
    pub event_type: EventType,
    pub campaign_id: Option<i64>,
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
#[allow(dead_code)] // Called by the emission sites (campaign, channel, contact, message changes).
pub(super) async fn emit(
    tx: &mut Tx,
    org_id: i64,
    event_type: EventType,
    campaign_id: Option<i64>,
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
        sqlx::query(
            "INSERT INTO outbox_events (org_id, type, campaign_id, occurred_at, data) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(org_id)
        .bind(event_type.as_str())
        .bind(campaign_id)
        .bind(occurred_at)
        .bind(data)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) fn outbox_event_from_row(row: &sqlx::any::AnyRow) -> Result<OutboxEvent, StoreError> {
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
        org_id: i64,
        after_id: i64,
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
