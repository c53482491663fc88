//! Channels: created (with sealed credentials and an optional rate limit) and read. The HTTP
//! API's management of channels is in `admin.rs`, provider outages in `outage.rs`.

pub mod admin;
pub mod outage;

use crate::ids::{ChannelId, OrgId};
use crate::store::{ChannelInfo, Store, StoreError};
use sqlx::Row;
use sqlx::any::AnyRow;

impl Store {
    pub async fn create_channel(
        &self,
        org_id: OrgId,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<ChannelId, StoreError> {
        self.create_channel_with(org_id, name, kind, config, None, None)
            .await
    }

    /// Creates a channel with sealed credentials and an optional rate limit, in one
    /// transaction (the seal binds the new channel's id, so it is written after the insert).
    pub async fn create_channel_with(
        &self,
        org_id: OrgId,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
        secrets: Option<(&crate::secrets::SecretKey, &serde_json::Value)>,
        rate_per_sec: Option<f64>,
    ) -> Result<ChannelId, StoreError> {
        let mut tx = self.begin().await?;
        let id: ChannelId = sqlx::query_scalar(
            "INSERT INTO channels (org_id, name, kind, config, rate_per_sec, created_at) \
             VALUES ($1, $2, $3, $4, CASE WHEN $7 = 1 THEN $5 END, $6) RETURNING id",
        )
        .bind(org_id)
        .bind(name)
        .bind(kind)
        .bind(config.to_string())
        // Never a NULL f64 bind: see `admin::update_org_channel`.
        .bind(rate_per_sec.unwrap_or(0.0))
        .bind(crate::clock::now_ms())
        .bind(i64::from(rate_per_sec.is_some()))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            StoreError::from_unique(e, || {
                format!("a channel named `{name}` already exists: pick another --name")
            })
        })?;
        if let Some((key, values)) = secrets {
            let sealed = crate::secrets::seal(key, id, values)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            sqlx::query("UPDATE channels SET secrets = $1 WHERE id = $2")
                .bind(sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub(in crate::store) fn channel_from_row(row: &AnyRow) -> Result<ChannelInfo, StoreError> {
        let config: String = row.try_get("config")?;
        Ok(ChannelInfo {
            id: row.try_get("id")?,
            org_id: row.try_get("org_id")?,
            name: row.try_get("name")?,
            kind: row.try_get("kind")?,
            config: serde_json::from_str(&config)
                .map_err(|e| StoreError::Corrupt(format!("channel config is not JSON: {e}")))?,
            secrets: row.try_get("secrets")?,
            rate_per_sec: row.try_get("rate_per_sec")?,
            pricing: match row.try_get::<Option<String>, _>("pricing")? {
                None => None,
                Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("channel pricing is not valid: {e}"))
                })?),
            },
            created_at: row.try_get("created_at")?,
        })
    }

    pub async fn channels(&self, org_id: OrgId) -> Result<Vec<ChannelInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, pricing, created_at FROM channels WHERE org_id = $1 ORDER BY id",
        )
        .bind(org_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(Self::channel_from_row).collect()
    }

    pub async fn channel(&self, id: ChannelId) -> Result<ChannelInfo, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, pricing, created_at FROM channels WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("channel {} does not exist", id)))?;
        Self::channel_from_row(&row)
    }

    pub async fn channel_by_name(
        &self,
        org_id: OrgId,
        name: &str,
    ) -> Result<ChannelInfo, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_id, name, kind, config, secrets, rate_per_sec, pricing, created_at FROM channels WHERE org_id = $1 AND name = $2",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "channel `{name}` does not exist: `herald channel list` shows the channels there are"
            ))
        })?;
        Self::channel_from_row(&row)
    }
}
