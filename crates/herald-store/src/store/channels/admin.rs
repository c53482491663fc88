//! Channels as the HTTP API manages them (scoped to one organisation: another
//! organisation's channel is "not found"), and the engine instances as the API lists them.

use crate::ids::{CampaignId, ChannelId, OrgId};
use crate::secrets::SecretKey;
use crate::store::{ChannelInfo, Store, StoreError, sql_str};
use sqlx::Row;

const CHANNEL_COLUMNS: &str =
    "id, org_id, name, kind, config, secrets, rate_per_sec, pricing, created_at";

/// A change to a channel, decided while its row is locked.
#[derive(Debug, Clone, Default)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    /// The channel's whole new configuration.
    pub config: Option<serde_json::Value>,
    /// The channel's whole new set of secrets, sealed under the key for this channel;
    /// `Some(None)` removes them all.
    pub secrets: Option<Option<(SecretKey, serde_json::Value)>>,
    /// `Some(None)` removes the rate limit.
    pub rate_per_sec: Option<Option<f64>>,
}

/// A campaign that uses a channel, named in the refusal to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRef {
    pub id: CampaignId,
    pub name: String,
}

/// What deleting a channel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelDeletion {
    Deleted,
    /// Campaigns use the channel: nothing was deleted. `others` counts campaigns of other
    /// organisations (never named).
    InUse {
        campaigns: Vec<CampaignRef>,
        others: i64,
    },
}

/// An engine instance, stopped ones included.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub role: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    pub in_flight: i64,
}

/// At most this many instances are listed (the most recent heartbeats first).
pub const INSTANCE_LIST_LIMIT: i64 = 200;

fn not_found(id: ChannelId) -> StoreError {
    StoreError::NotFound(format!("there is no channel {id}"))
}

impl Store {
    /// One channel of the organisation.
    pub async fn org_channel(
        &self,
        org_id: OrgId,
        id: ChannelId,
    ) -> Result<ChannelInfo, StoreError> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE org_id = $1 AND id = $2");
        let row = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| not_found(id))?;
        Self::channel_from_row(&row)
    }

    /// Channels of the organisation with ids above `after`, in id order, at most `limit`.
    pub async fn org_channels_page(
        &self,
        org_id: OrgId,
        after: ChannelId,
        limit: i64,
    ) -> Result<Vec<ChannelInfo>, StoreError> {
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(Self::channel_from_row).collect()
    }

    /// Changes a channel of the organisation. `decide` sees the current row while it is
    /// locked, so two concurrent changes cannot both build on the same old state (secrets
    /// are merged from the current ones). A new name that is taken is a conflict.
    pub async fn update_org_channel<E, F>(
        &self,
        org_id: OrgId,
        id: ChannelId,
        decide: F,
    ) -> Result<ChannelInfo, E>
    where
        E: From<StoreError>,
        F: FnOnce(&ChannelInfo) -> Result<ChannelUpdate, E>,
    {
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE org_id = $1 AND id = $2{}",
            self.dialect.lock_suffix()
        );
        let row = sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| not_found(id))?;
        let current = Self::channel_from_row(&row)?;
        let update = match decide(&current) {
            Ok(u) => u,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        let name = update.name.unwrap_or_else(|| current.name.clone());
        let config = update.config.unwrap_or_else(|| current.config.clone());
        let rate = update.rate_per_sec.unwrap_or(current.rate_per_sec);
        let sealed = match &update.secrets {
            Some(Some((key, values))) => Some(
                crate::secrets::seal(key, id, values)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            ),
            Some(None) => None,
            None => current.secrets.clone(),
        };
        sqlx::query(
            "UPDATE channels SET name = $1, config = $2, secrets = $3, \
             rate_per_sec = CASE WHEN $7 = 1 THEN $4 END WHERE org_id = $5 AND id = $6",
        )
        .bind(&name)
        .bind(config.to_string())
        .bind(sealed.as_deref())
        // Never a NULL f64 bind: sqlx 0.9.0's Any driver sends a NULL f64 to PostgreSQL as a
        // float4 parameter, the connection caches the statement with that type, and the next
        // real rate (8 bytes) on it fails with "incorrect binary data format in bind
        // parameter 4" (found by schemathesis as a 500).
        .bind(rate.unwrap_or(0.0))
        .bind(org_id)
        .bind(id)
        .bind(i64::from(rate.is_some()))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            StoreError::from_unique(e, || format!("a channel named `{name}` already exists"))
        })?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ChannelInfo {
            name,
            config,
            secrets: sealed,
            rate_per_sec: rate,
            ..current
        })
    }

    /// Sets (or, with None, removes) the organisation's channel's prices.
    pub async fn set_org_channel_pricing(
        &self,
        org_id: OrgId,
        id: ChannelId,
        pricing: Option<&crate::pricing::Pricing>,
    ) -> Result<ChannelInfo, StoreError> {
        let json = pricing
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Invalid(format!("the prices cannot be stored: {e}")))?;
        let changed = sqlx::query("UPDATE channels SET pricing = $1 WHERE org_id = $2 AND id = $3")
            .bind(json)
            .bind(org_id)
            .bind(id)
            .execute(&self.write)
            .await?
            .rows_affected();
        if changed != 1 {
            return Err(StoreError::NotFound(format!(
                "there is no channel `{id}`: GET /api/v1/channels lists the channels there are"
            )));
        }
        self.org_channel(org_id, id).await
    }

    /// Deletes a channel of the organisation unless a campaign uses it. Its rate bucket
    /// and the sandbox provider's record of it go too (SQLite may hand its id to the next
    /// channel).
    pub async fn delete_org_channel(
        &self,
        org_id: OrgId,
        id: ChannelId,
    ) -> Result<ChannelDeletion, StoreError> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT id FROM channels WHERE org_id = $1 AND id = $2{}",
            self.dialect.lock_suffix()
        );
        sqlx::query(sql_str(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(id))?;
        let rows =
            sqlx::query("SELECT id, org_id, name FROM campaigns WHERE channel_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        if !rows.is_empty() {
            let mut campaigns = Vec::new();
            let mut others = 0;
            for r in &rows {
                let campaign_org: OrgId = r.try_get("org_id")?;
                if campaign_org == org_id {
                    campaigns.push(CampaignRef {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                    });
                } else {
                    others += 1;
                }
            }
            tx.rollback().await?;
            return Ok(ChannelDeletion::InUse { campaigns, others });
        }
        for sql in [
            "DELETE FROM channel_rate WHERE channel_id = $1",
            "DELETE FROM sandbox_received WHERE channel_id = $1",
            "DELETE FROM webhook_events WHERE channel_id = $1",
            "DELETE FROM inbound_messages WHERE channel_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM channels WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                // A campaign created at the same moment still holds it.
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Conflict(
                    format!("channel {id} is used by a campaign created just now"),
                ),
                _ => StoreError::Database(e),
            })?;
        tx.commit().await?;
        Ok(ChannelDeletion::Deleted)
    }

    /// Engine instances, running and stopped, the most recent heartbeat first (at most
    /// [`INSTANCE_LIST_LIMIT`]). Instances are system-wide, not an organisation's data.
    pub async fn instance_records(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.id, i.host, i.pid, i.version, i.role, i.started_at, i.heartbeat_at, i.stopped_at, \
             (SELECT count(*) FROM messages m WHERE m.status = 'in_flight' AND m.owner = i.id) AS in_flight \
             FROM instances i ORDER BY i.heartbeat_at DESC, i.id LIMIT $1",
        )
        .bind(INSTANCE_LIST_LIMIT)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRecord {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    version: r.try_get("version")?,
                    role: r.try_get("role")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    stopped_at: r.try_get("stopped_at")?,
                    in_flight: r.try_get("in_flight")?,
                })
            })
            .collect()
    }
}
