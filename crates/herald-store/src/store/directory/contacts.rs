//! Lists, contacts and suppressions as the CLI, the importer and the engine use them: lists
//! made on import, contacts imported in batches (or seeded for `herald bench`), the attribute
//! keys templates may use, and addresses suppressed and unsuppressed with their event.

use super::{Bind, query_with};
use crate::ids::{ListId, MessageId, OrgId};
use crate::store::events::outbox;
use crate::store::{ContactInput, ListInfo, OptSource, Store, StoreError, UpsertReport};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeSet;

impl Store {
    /// Returns the list's id, creating it if needed.
    pub async fn ensure_list(&self, org_id: OrgId, name: &str) -> Result<ListId, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO lists (org_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (org_id, name) DO NOTHING",
        )
        .bind(org_id)
        .bind(name)
        .bind(crate::clock::now_ms())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT id, filter FROM lists WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if row.try_get::<Option<String>, _>("filter")?.is_some() {
            tx.rollback().await?;
            return Err(super::segments::segment_has_no_members(name));
        }
        let id: ListId = row.try_get("id")?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn list_by_name(&self, org_id: OrgId, name: &str) -> Result<ListInfo, StoreError> {
        let row = sqlx::query(
            "SELECT l.id, l.name, (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members \
             FROM lists l WHERE l.org_id = $1 AND l.name = $2",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "list `{name}` does not exist: import contacts into it first with `herald contacts import FILE.csv --list {name}`"
            ))
        })?;
        list_from_row(&row)
    }

    pub async fn lists(&self, org_id: OrgId) -> Result<Vec<ListInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT l.id, l.name, (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members \
             FROM lists l WHERE l.org_id = $1 ORDER BY l.name",
        )
        .bind(org_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(list_from_row).collect()
    }

    /// Inserts or updates a batch of contacts (by address) and adds them to the list, in one
    /// transaction. Reports how many were new and how many existed.
    pub async fn upsert_contacts(
        &self,
        org_id: OrgId,
        list_id: ListId,
        contacts: &[ContactInput],
    ) -> Result<UpsertReport, StoreError> {
        if contacts.is_empty() {
            return Ok(UpsertReport::default());
        }
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let addresses = serde_json::Value::from(
            contacts
                .iter()
                .map(|c| c.address.as_str())
                .collect::<Vec<_>>(),
        )
        .to_string();
        let existing_sql = format!(
            "SELECT address FROM contacts WHERE org_id = $1 AND address IN {}",
            self.dialect.json_texts("$2")
        );
        let mut existing: BTreeSet<String> = sqlx::query_scalar(AssertSqlSafe(existing_sql))
            .bind(org_id)
            .bind(&addresses)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let mut report = UpsertReport::default();
        for c in contacts {
            // A later row of the same file for the same address counts as an update.
            if existing.insert(c.address.as_str().to_owned()) {
                report.inserted += 1;
            } else {
                report.updated += 1;
            }
        }
        // Later duplicates in one batch win; ON CONFLICT cannot touch a row twice in one
        // statement on PostgreSQL, so each contact is its own statement.
        for c in contacts {
            sqlx::query(
                "INSERT INTO contacts (org_id, address, name, attributes, unsubscribed, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, COALESCE($5, 0), $6, $6) \
                 ON CONFLICT (org_id, address) DO UPDATE SET \
                   name = COALESCE(excluded.name, contacts.name), attributes = excluded.attributes, \
                   unsubscribed = CASE WHEN $5 IS NULL THEN contacts.unsubscribed ELSE excluded.unsubscribed END, \
                   updated_at = excluded.updated_at",
            )
            .bind(org_id)
            .bind(&c.address)
            .bind(c.name.as_deref())
            .bind(serde_json::Value::Object(c.attributes.clone()).to_string())
            .bind(c.unsubscribed.map(i64::from))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let members_sql = format!(
            "INSERT INTO list_members (list_id, contact_id, added_at) \
             SELECT $1, c.id, $3 FROM contacts c WHERE c.org_id = $4 AND c.address IN {} \
             ON CONFLICT (list_id, contact_id) DO NOTHING",
            self.dialect.json_texts("$2")
        );
        sqlx::query(AssertSqlSafe(members_sql))
            .bind(list_id)
            .bind(&addresses)
            .bind(now)
            .bind(org_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Attribute keys present on at least one contact of the list. Attributes too large
    /// to read (rows from before the contact rules, see
    /// `directory::bounded_contact_fields`) are not parsed: templates never see them.
    pub async fn list_attribute_keys(
        &self,
        list_id: ListId,
    ) -> Result<BTreeSet<String>, StoreError> {
        // A segment's: the keys of the contacts its filter matches now.
        let org_id: Option<OrgId> = sqlx::query_scalar("SELECT org_id FROM lists WHERE id = $1")
            .bind(list_id)
            .fetch_optional(&self.read)
            .await?;
        if let Some(org_id) = org_id
            && let Some(segment) = self
                .segment_of(org_id, list_id, crate::clock::now_ms())
                .await?
        {
            let mut binds = vec![
                Bind::Int(org_id.get()),
                Bind::Int(crate::contact_rules::MAX_READ_ATTRIBUTES_BYTES as i64),
            ];
            let condition = segment.condition(self.dialect, &mut binds);
            let rows = query_with(self.dialect.attribute_keys_where(&condition), binds)
                .fetch_all(&self.read)
                .await?;
            return rows
                .iter()
                .map(|r| Ok(r.try_get::<String, _>("key")?))
                .collect();
        }
        let sql = self.dialect.attribute_keys();
        let keys: Vec<String> = sqlx::query_scalar(sql)
            .bind(list_id)
            .bind(crate::contact_rules::MAX_READ_ATTRIBUTES_BYTES as i64)
            .fetch_all(&self.read)
            .await?;
        Ok(keys.into_iter().collect())
    }

    /// Synthetic contacts `+12000000001…` for `herald bench`, added to the list in bulk.
    pub async fn seed_contacts(
        &self,
        org_id: OrgId,
        list_id: ListId,
        n: i64,
    ) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        let (contacts, members) = self.dialect.seed_contacts();
        let mut tx = self.begin().await?;
        sqlx::query(contacts)
            .bind(org_id)
            .bind(n)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(members)
            .bind(list_id)
            .bind(org_id)
            .bind(n)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Suppresses an address unless it already is; a new suppression writes
    /// `contact.unsubscribed` (saying how, `via`) in the same transaction. True when new.
    pub async fn suppress(
        &self,
        org_id: OrgId,
        address: &str,
        reason: &str,
        via: &OptSource<'_>,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "INSERT INTO suppressions (org_id, address, reason, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, address) DO NOTHING",
        )
        .bind(org_id)
        .bind(address)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        outbox::emit_contact_change(&mut tx, org_id, address, true, via, Some(reason), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes an address from the suppression list (an inbound START, the API); a removal
    /// writes `contact.resubscribed` in the same transaction. True when it was suppressed.
    pub async fn unsuppress(
        &self,
        org_id: OrgId,
        address: &str,
        via: &OptSource<'_>,
    ) -> Result<bool, StoreError> {
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM suppressions WHERE org_id = $1 AND address = $2")
            .bind(org_id)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        outbox::emit_contact_change(&mut tx, org_id, address, false, via, None, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn is_suppressed(&self, org_id: OrgId, address: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM suppressions WHERE org_id = $1 AND address = $2",
        )
        .bind(org_id)
        .bind(address)
        .fetch_one(&self.read)
        .await?;
        Ok(n > 0)
    }

    /// The organisation and address a message went to, also once the message is in its
    /// campaign's archive (an unsubscribe link works as long as the campaign exists).
    pub async fn message_recipient(
        &self,
        message_id: MessageId,
    ) -> Result<Option<(OrgId, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT c.org_id, m.address FROM messages m JOIN campaigns c ON c.id = m.campaign_id WHERE m.id = $1",
        )
        .bind(message_id)
        .fetch_optional(&self.read)
        .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("org_id")?, r.try_get("address")?))),
            None => Ok(self
                .archived_message(message_id)
                .await?
                .map(|(_, org_id, m)| (org_id, m.address))),
        }
    }
}

pub(in crate::store) fn list_from_row(row: &AnyRow) -> Result<ListInfo, StoreError> {
    Ok(ListInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        members: row.try_get("members")?,
    })
}
