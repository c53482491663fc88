//! Lists and segments as the HTTP API sees them: every function takes the caller's
//! organisation and never reads or changes a row of another one. A segment's members are
//! counted by its filter (`segments.rs`); its `list_members` stay empty.

use super::admin::{LIST_COLUMNS, list_conflict, list_missing, list_row};
use super::{ListDeletion, ListRow};
use crate::ids::{ContactId, ListId, OrgId};
use crate::store::helpers::ids_json;
use crate::store::{Store, StoreError};
use sqlx::{AssertSqlSafe, Row};

impl Store {
    /// Lists of the organisation with an id above `after`, in id order, at most `limit`.
    pub async fn org_lists(
        &self,
        org_id: OrgId,
        after: ListId,
        limit: i64,
    ) -> Result<Vec<ListRow>, StoreError> {
        let sql = format!(
            "SELECT {LIST_COLUMNS} FROM lists l WHERE l.org_id = $1 AND l.id > $2 ORDER BY l.id LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(list_row).collect()
    }

    pub async fn org_list(&self, org_id: OrgId, id: ListId) -> Result<ListRow, StoreError> {
        let sql = format!("SELECT {LIST_COLUMNS} FROM lists l WHERE l.org_id = $1 AND l.id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| list_missing(id))?;
        list_row(&row)
    }

    /// Counts the members of the segments among `lists` live (a list's count is already
    /// right). A segment whose filter cannot run keeps 0 and says why in `filter_problem`.
    pub async fn count_segment_members(
        &self,
        org_id: OrgId,
        lists: &mut [ListRow],
    ) -> Result<(), StoreError> {
        for list in lists.iter_mut().filter(|l| l.filter.is_some()) {
            let now = crate::clock::now_ms();
            let segment = match self.segment_of(org_id, list.id, now).await {
                Ok(Some(segment)) => segment,
                Ok(None) => continue,
                Err(StoreError::Invalid(why)) => {
                    list.filter_problem = Some(why);
                    continue;
                }
                Err(e) => return Err(e),
            };
            list.members = self.count_segment(org_id, &segment).await?;
        }
        Ok(())
    }

    /// Creates a list; a name the organisation already uses is a conflict.
    pub async fn create_org_list(&self, org_id: OrgId, name: &str) -> Result<ListRow, StoreError> {
        let id: ListId = sqlx::query_scalar(
            "INSERT INTO lists (org_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(org_id)
        .bind(name)
        .bind(crate::clock::now_ms())
        .fetch_one(&self.write)
        .await
        .map_err(|e| list_conflict(e, name))?;
        self.org_list(org_id, id).await
    }

    pub async fn rename_org_list(
        &self,
        org_id: OrgId,
        id: ListId,
        name: &str,
    ) -> Result<ListRow, StoreError> {
        let r = sqlx::query("UPDATE lists SET name = $3 WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .bind(name)
            .execute(&self.write)
            .await
            .map_err(|e| list_conflict(e, name))?;
        if r.rows_affected() == 0 {
            return Err(list_missing(id));
        }
        self.org_list(org_id, id).await
    }

    /// Deletes a list and its memberships (the contacts stay), unless a campaign uses it.
    pub async fn delete_org_list(
        &self,
        org_id: OrgId,
        id: ListId,
    ) -> Result<ListDeletion, StoreError> {
        let lock = self.dialect.lock_suffix();
        let mut tx = self.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM lists WHERE org_id = $1 AND id = $2{lock}"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            tx.rollback().await?;
            return Err(list_missing(id));
        }
        let rows = sqlx::query(
            "SELECT id, name FROM campaigns WHERE org_id = $1 AND list_id = $2 ORDER BY id",
        )
        .bind(org_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !rows.is_empty() {
            let campaigns = rows
                .iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            tx.rollback().await?;
            return Ok(ListDeletion::InUse(campaigns));
        }
        sqlx::query("DELETE FROM list_members WHERE list_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM lists WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await;
        match deleted {
            Ok(_) => {}
            // A campaign created meanwhile refers to it.
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::Conflict(format!(
                    "list `{id}` is used by a campaign and cannot be deleted"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(ListDeletion::Deleted)
    }

    /// Adds contacts of the organisation to one of its lists; ids that are not its
    /// contacts are ignored (check them first with [`Store::unknown_org_ids`]), and members
    /// stay members. Returns how many became members.
    pub async fn add_org_list_members(
        &self,
        org_id: OrgId,
        list_id: ListId,
        contact_ids: &[ContactId],
    ) -> Result<u64, StoreError> {
        self.refuse_segment_members(org_id, &[list_id]).await?;
        let sql = format!(
            "INSERT INTO list_members (list_id, contact_id, added_at) \
             SELECT l.id, c.id, $3 FROM lists l JOIN contacts c ON c.org_id = l.org_id \
             WHERE l.org_id = $1 AND l.id = $2 AND l.filter IS NULL AND c.id IN {} \
             ON CONFLICT (list_id, contact_id) DO NOTHING",
            self.dialect.json_ids("$4")
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(list_id)
            .bind(crate::clock::now_ms())
            .bind(ids_json(contact_ids.iter().copied()))
            .execute(&self.write)
            .await?;
        Ok(r.rows_affected())
    }

    /// Removes a contact from a list; NotFound when it was not a member.
    pub async fn remove_org_list_member(
        &self,
        org_id: OrgId,
        list_id: ListId,
        contact_id: ContactId,
    ) -> Result<(), StoreError> {
        self.refuse_segment_members(org_id, &[list_id]).await?;
        let r = sqlx::query(
            "DELETE FROM list_members WHERE list_id = $2 AND contact_id = $3 \
             AND list_id IN (SELECT id FROM lists WHERE org_id = $1 AND id = $2)",
        )
        .bind(org_id)
        .bind(list_id)
        .bind(contact_id)
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "contact `{contact_id}` is not a member of list `{list_id}`"
            )));
        }
        Ok(())
    }
}
