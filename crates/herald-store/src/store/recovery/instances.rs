//! Engine instances: registered at start, kept alive by their heartbeat, stopped, and
//! listed with the messages each has in flight.

use crate::store::{InstanceInfo, InstanceRow, Store, StoreError};
use sqlx::Row;

impl Store {
    pub async fn register_instance(&self, i: &InstanceInfo) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, host, pid, proc_start, version, role, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&i.id)
        .bind(&i.host)
        .bind(i.pid)
        .bind(i.proc_start.as_deref())
        .bind(&i.version)
        .bind(&i.role)
        .bind(i.started_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Renews the instance's heartbeat. The heartbeat is what keeps this instance's claims
    /// its own: past a message's `lease_until`, only a stale heartbeat lets anyone take it
    /// back. (Renewing every message's lease here would lock message rows in an order that
    /// can deadlock with group commits on PostgreSQL.)
    pub async fn heartbeat(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let alive = sqlx::query(
            "UPDATE instances SET heartbeat_at = $1 WHERE id = $2 AND stopped_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?
        .rows_affected()
            == 1;
        Ok(alive)
    }

    /// Registers a deregistered instance again (it was taken for dead but is alive).
    pub async fn revive_instance(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET stopped_at = NULL, heartbeat_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn stop_instance(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET stopped_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Every registered instance that has not stopped, newest heartbeat first.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.id, i.host, i.pid, i.proc_start, i.version, i.role, i.started_at, i.heartbeat_at, i.stopped_at, \
             (SELECT count(*) FROM messages m WHERE m.status = 'in_flight' AND m.owner = i.id) AS in_flight \
             FROM instances i WHERE i.stopped_at IS NULL ORDER BY i.heartbeat_at DESC",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    proc_start: r.try_get("proc_start")?,
                    version: r.try_get("version")?,
                    role: r.try_get("role")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    in_flight: r.try_get("in_flight")?,
                })
            })
            .collect()
    }

    /// Marks instances stopped that the caller proved dead (same host, process gone), so
    /// they no longer show as live.
    pub async fn forget_instances(&self, ids: &[String], now: i64) -> Result<(), StoreError> {
        for id in ids {
            self.stop_instance(id, now).await?;
        }
        Ok(())
    }
}
