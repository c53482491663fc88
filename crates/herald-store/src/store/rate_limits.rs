//! Channel rate limits shared by all instances: a token bucket per channel in
//! `channel_rate`, slowed for every instance when a provider answers "too many requests".

use crate::ids::ChannelId;
use crate::store::{Store, StoreError, TokenGrant};
use sqlx::{AssertSqlSafe, Row};

impl Store {
    /// Takes up to `want` tokens from the channel's shared bucket (refilled at
    /// `rate_per_sec` × the adaptive factor, holding at most `burst`). Returns what was
    /// granted and, when short, how long until the rest would be there.
    pub async fn take_tokens(
        &self,
        channel_id: ChannelId,
        rate_per_sec: f64,
        burst: f64,
        want: f64,
        now: i64,
    ) -> Result<TokenGrant, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO channel_rate (channel_id, tokens, updated_at) VALUES ($1, $2, $3) ON CONFLICT (channel_id) DO NOTHING",
        )
        .bind(channel_id)
        .bind(burst)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT tokens, updated_at, factor, penalized_at, slow_until FROM channel_rate WHERE channel_id = $1{}",
            self.dialect.lock_suffix()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(channel_id)
            .fetch_one(&mut *tx)
            .await?;
        let tokens: f64 = row.try_get("tokens")?;
        let updated_at: i64 = row.try_get("updated_at")?;
        let mut factor: f64 = row.try_get("factor")?;
        let penalized_at: i64 = row.try_get("penalized_at")?;
        let slow_until: i64 = row.try_get("slow_until")?;
        // The rate recovers a quarter every 10 s without a new rate-limit answer.
        if factor < 1.0 && now - penalized_at >= 10_000 {
            let steps = ((now - penalized_at) / 10_000) as i32;
            factor = (factor * 1.25f64.powi(steps)).min(1.0);
        }
        let rate = (rate_per_sec * factor).max(f64::MIN_POSITIVE);
        let elapsed = (now - updated_at).max(0) as f64 / 1000.0;
        let available = (tokens + elapsed * rate).min(burst);
        let granted = if now < slow_until {
            0.0
        } else {
            want.min(available.floor()).max(0.0)
        };
        let wait_ms = if now < slow_until {
            slow_until - now
        } else if granted >= want {
            0
        } else {
            (((want - available).max(0.0) / rate) * 1000.0)
                .ceil()
                .max(1.0) as i64
        };
        sqlx::query(
            "UPDATE channel_rate SET tokens = $1, updated_at = $2, factor = $3 WHERE channel_id = $4",
        )
        .bind(available - granted)
        .bind(now)
        .bind(factor)
        .bind(channel_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TokenGrant {
            granted,
            wait_ms,
            factor,
        })
    }

    /// A provider said "too many requests": halve the channel's rate for every instance
    /// (down to a tenth) and send nothing before `retry_after_ms` has passed.
    pub async fn penalize_rate(
        &self,
        channel_id: ChannelId,
        retry_after_ms: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE channel_rate SET factor = CASE WHEN factor * 0.5 < 0.1 THEN 0.1 ELSE factor * 0.5 END, \
             penalized_at = $1, tokens = 0, updated_at = $1, \
             slow_until = CASE WHEN slow_until > $2 THEN slow_until ELSE $2 END WHERE channel_id = $3",
        )
        .bind(now)
        .bind(now + retry_after_ms.max(0))
        .bind(channel_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
