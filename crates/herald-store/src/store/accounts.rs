//! Accounts and the HTTP API's bookkeeping: users, API keys, sessions, login failure
//! windows, idempotency keys and one-time flags. Secrets never reach this file in the
//! clear: passwords arrive as argon2id PHC strings, keys and session tokens as SHA-256
//! digests.

use super::{Store, StoreError};
use crate::domain::Role;
use crate::ids::{ApiKeyId, OrgId, SessionId, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub id: UserId,
    pub org_id: OrgId,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A user with the password hash, for signing in only.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: UserInfo,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct ApiKeyInfo {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub name: String,
    pub role: Role,
    /// The first characters of the key, enough to recognise it in a list.
    pub prefix: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A live session with its user.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: SessionId,
    pub user: UserInfo,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// What an `Idempotency-Key` already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    /// The key is new: this request owns it and must finish or abandon it.
    Started,
    /// A request with this key is still running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// The key's first response, to replay.
    Done(StoredResponse),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: String,
}

/// A key whose request never finished (its process died) is taken over after this long.
const ABANDONED_KEY_MS: i64 = 60_000;

fn role_of(row: &AnyRow) -> Result<Role, StoreError> {
    let s: String = row.try_get("role")?;
    Role::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("unknown role `{s}`")))
}

fn user_from_row(row: &AnyRow) -> Result<UserInfo, StoreError> {
    Ok(UserInfo {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        email: row.try_get("email")?,
        role: role_of(row)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn api_key_from_row(row: &AnyRow) -> Result<ApiKeyInfo, StoreError> {
    Ok(ApiKeyInfo {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        role: role_of(row)?,
        prefix: row.try_get("prefix")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const USER_COLUMNS: &str = "id, org_id, email, role, created_at, updated_at";
const API_KEY_COLUMNS: &str =
    "id, org_id, name, role, prefix, created_by, created_at, last_used_at, revoked_at";

impl Store {
    // ----------------------------------------------------------------------------------
    // Users
    // ----------------------------------------------------------------------------------

    /// `email` must already be normalised (trimmed, lower case).
    pub async fn create_user(
        &self,
        org_id: OrgId,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<UserInfo, StoreError> {
        let now = crate::clock::now_ms();
        let sql = format!(
            "INSERT INTO users (org_id, email, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(email)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(now)
            .fetch_one(&self.write)
            .await
            .map_err(|e| {
                StoreError::from_unique(e, || format!("a user with email `{email}` already exists"))
            })?;
        user_from_row(&row)
    }

    /// Creates the first owner in the `default` organisation, once per database: true when
    /// this call created it (no user existed and no other instance did it first).
    pub async fn bootstrap_owner(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO herald_flags (name, at) VALUES ('first_owner', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return Ok(false);
        }
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            tx.commit().await?;
            return Ok(false);
        }
        let org: i64 = sqlx::query_scalar("SELECT id FROM organisations WHERE name = 'default'")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO users (org_id, email, password_hash, role, created_at, updated_at) \
             VALUES ($1, $2, $3, 'owner', $4, $4)",
        )
        .bind(org)
        .bind(email)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.read)
            .await?)
    }

    pub async fn user_credentials(
        &self,
        email: &str,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(UserCredentials {
                user: user_from_row(&r)?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()
    }

    pub async fn users(&self, org_id: OrgId) -> Result<Vec<UserInfo>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn user(&self, org_id: OrgId, id: UserId) -> Result<UserInfo, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {} does not exist", id)))?;
        user_from_row(&row)
    }

    /// Changes a user's role and/or password. Refuses to leave the organisation without an
    /// owner. A password change signs the user out everywhere.
    pub async fn update_user(
        &self,
        org_id: OrgId,
        id: UserId,
        role: Option<Role>,
        password_hash: Option<&str>,
    ) -> Result<UserInfo, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT role FROM users WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("user {} does not exist", id)));
        };
        if let Some(role) = role {
            if current == "owner" && role != Role::Owner {
                last_owner_check(&mut tx, org_id, id).await?;
            }
            sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
                .bind(role.as_str())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(hash) = password_hash {
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.user(org_id, id).await
    }

    /// Deletes a user (and so its sessions). Refuses to delete the organisation's last owner.
    pub async fn delete_user(&self, org_id: OrgId, id: UserId) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT role FROM users WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("user {} does not exist", id)));
        };
        if current == "owner" {
            last_owner_check(&mut tx, org_id, id).await?;
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // API keys
    // ----------------------------------------------------------------------------------

    pub async fn create_api_key(
        &self,
        org_id: OrgId,
        name: &str,
        role: Role,
        prefix: &str,
        key_hash: &str,
        created_by: &str,
    ) -> Result<ApiKeyInfo, StoreError> {
        let sql = format!(
            "INSERT INTO api_keys (org_id, name, role, prefix, key_hash, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {API_KEY_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(name)
            .bind(role.as_str())
            .bind(prefix)
            .bind(key_hash)
            .bind(created_by)
            .bind(crate::clock::now_ms())
            .fetch_one(&self.write)
            .await?;
        api_key_from_row(&row)
    }

    pub async fn api_keys(&self, org_id: OrgId) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    pub async fn api_key(&self, org_id: OrgId, id: ApiKeyId) -> Result<ApiKeyInfo, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE org_id = $1 AND id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key {} does not exist", id)))?;
        api_key_from_row(&row)
    }

    /// Revokes a key; revoking a revoked key changes nothing.
    pub async fn revoke_api_key(
        &self,
        org_id: OrgId,
        id: ApiKeyId,
    ) -> Result<ApiKeyInfo, StoreError> {
        let found = sqlx::query("SELECT id FROM api_keys WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!(
                "API key {} does not exist",
                id
            )));
        }
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(crate::clock::now_ms())
        .bind(org_id)
        .bind(id)
        .execute(&self.write)
        .await?;
        self.api_key(org_id, id).await
    }

    /// The live (not revoked) key with this digest. Records its use at most once a minute,
    /// so a busy key does not turn every read into a write.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let sql = format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key_from_row(&row)?;
        let now = crate::clock::now_ms();
        if key.last_used_at.is_none_or(|at| at < now - 60_000) {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(now)
            .bind(key.id)
            .bind(now - 60_000)
            .execute(&self.write)
            .await?;
        }
        Ok(Some(key))
    }

    // ----------------------------------------------------------------------------------
    // Sessions
    // ----------------------------------------------------------------------------------

    pub async fn create_session(
        &self,
        user_id: UserId,
        token_hash: &str,
        csrf_token: &str,
        address: &str,
        expires_at: i64,
    ) -> Result<SessionId, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, address, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(address)
        .bind(crate::clock::now_ms())
        .bind(expires_at)
        .fetch_one(&self.write)
        .await?)
    }

    /// The live session with this token digest, if not expired or revoked.
    pub async fn session_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id AS session_id, s.csrf_token, s.expires_at, u.id, u.org_id, u.email, u.role, u.created_at, u.updated_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
        )
        .bind(token_hash)
        .bind(crate::clock::now_ms())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(SessionInfo {
                id: r.try_get("session_id")?,
                user: user_from_row(&r)?,
                csrf_token: r.try_get("csrf_token")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn revoke_session(&self, id: SessionId) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(crate::clock::now_ms())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Login rate limits
    // ----------------------------------------------------------------------------------

    /// Milliseconds until `scope` may try again, when it has `limit` failures or more in
    /// the current window.
    pub async fn login_blocked(
        &self,
        scope: &str,
        window_ms: i64,
        limit: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = crate::clock::now_ms();
        let row = sqlx::query("SELECT window_start, failures FROM login_failures WHERE scope = $1")
            .bind(scope)
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let start: i64 = row.try_get("window_start")?;
        let failures: i64 = row.try_get("failures")?;
        if start + window_ms > now && failures >= limit {
            Ok(Some(start + window_ms - now))
        } else {
            Ok(None)
        }
    }

    /// Counts a sign-in attempt against `scope` before its password is checked, and returns
    /// the count in the window: concurrent attempts each see their own count, so a burst
    /// cannot slip past the limit. A window older than `window_ms` starts over. A successful
    /// attempt is forgiven afterwards (`forgive_login_attempt`).
    pub async fn count_login_attempt(
        &self,
        scope: &str,
        window_ms: i64,
    ) -> Result<i64, StoreError> {
        let now = crate::clock::now_ms();
        Ok(sqlx::query_scalar(
            "INSERT INTO login_failures (scope, window_start, failures) VALUES ($1, $2, 1) \
             ON CONFLICT (scope) DO UPDATE SET \
             failures = CASE WHEN login_failures.window_start <= $3 THEN 1 ELSE login_failures.failures + 1 END, \
             window_start = CASE WHEN login_failures.window_start <= $3 THEN $2 ELSE login_failures.window_start END \
             RETURNING failures",
        )
        .bind(scope)
        .bind(now)
        .bind(now - window_ms)
        .fetch_one(&self.write)
        .await?)
    }

    /// Takes back one counted attempt (it succeeded).
    pub async fn forgive_login_attempt(&self, scope: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_failures SET failures = failures - 1 WHERE scope = $1 AND failures > 0",
        )
        .bind(scope)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Counts a failed sign-in against `scope` (tests and tools; sign-in itself counts
    /// attempts up front with `count_login_attempt`).
    pub async fn record_login_failure(
        &self,
        scope: &str,
        window_ms: i64,
    ) -> Result<(), StoreError> {
        self.count_login_attempt(scope, window_ms).await.map(|_| ())
    }

    pub async fn clear_login_failures(&self, scope: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE scope = $1")
            .bind(scope)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Idempotency keys
    // ----------------------------------------------------------------------------------

    /// Claims `key` for a request with this fingerprint, or says what the key already holds.
    /// Keys older than `keep_ms` are forgotten first.
    pub async fn idempotency_begin(
        &self,
        org_id: OrgId,
        key: &str,
        fingerprint: &str,
        keep_ms: i64,
    ) -> Result<IdempotencyState, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now - keep_ms)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (org_id, idem_key, fingerprint, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, idem_key) DO NOTHING",
        )
        .bind(org_id)
        .bind(key)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            tx.commit().await?;
            return Ok(IdempotencyState::Started);
        }
        let row = sqlx::query(
            "SELECT fingerprint, status_code, content_type, location, body, created_at FROM idempotency_keys \
             WHERE org_id = $1 AND idem_key = $2",
        )
        .bind(org_id)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let stored_fingerprint: String = row.try_get("fingerprint")?;
        let status: Option<i64> = row.try_get("status_code")?;
        let created_at: i64 = row.try_get("created_at")?;
        let state = if stored_fingerprint != fingerprint {
            IdempotencyState::Mismatch
        } else if let Some(status) = status {
            IdempotencyState::Done(StoredResponse {
                status: u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt(format!("status code {status}")))?,
                content_type: row.try_get("content_type")?,
                location: row.try_get("location")?,
                body: row
                    .try_get::<Option<String>, _>("body")?
                    .unwrap_or_default(),
            })
        } else if created_at < now - ABANDONED_KEY_MS {
            // Its request died with its process: this one takes the key over.
            sqlx::query(
                "UPDATE idempotency_keys SET created_at = $1 WHERE org_id = $2 AND idem_key = $3 AND status_code IS NULL",
            )
            .bind(now)
            .bind(org_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            IdempotencyState::Started
        } else {
            IdempotencyState::InProgress
        };
        tx.commit().await?;
        Ok(state)
    }

    pub async fn idempotency_finish(
        &self,
        org_id: OrgId,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, content_type = $2, location = $3, body = $4 \
             WHERE org_id = $5 AND idem_key = $6 AND status_code IS NULL",
        )
        .bind(i64::from(response.status))
        .bind(response.content_type.as_deref())
        .bind(response.location.as_deref())
        .bind(response.body.as_str())
        .bind(org_id)
        .bind(key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Frees a key whose request failed without an effect (a server error), so a retry runs.
    pub async fn idempotency_abandon(&self, org_id: OrgId, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE org_id = $1 AND idem_key = $2 AND status_code IS NULL",
        )
        .bind(org_id)
        .bind(key)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

async fn last_owner_check(
    tx: &mut super::Tx,
    org_id: OrgId,
    user_id: UserId,
) -> Result<(), StoreError> {
    // Lock the organisation's owners first (a no-op write takes row locks on PostgreSQL;
    // SQLite's writer lock already serialises), so two owners demoting each other at once
    // cannot both see "another owner remains".
    sqlx::query("UPDATE users SET updated_at = updated_at WHERE org_id = $1 AND role = 'owner'")
        .bind(org_id)
        .execute(&mut **tx)
        .await?;
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE org_id = $1 AND role = 'owner' AND id <> $2",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    if others == 0 {
        return Err(StoreError::Conflict(
            "this is the organisation's last owner: make another user owner first".into(),
        ));
    }
    Ok(())
}
