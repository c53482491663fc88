//! Contacts and suppressions as the HTTP API sees them (lists in `lists.rs`): every
//! function here takes the caller's organisation and never reads or changes a row of
//! another one (another organisation's row is simply "not found").

use crate::address::Address;
use crate::ids::{CampaignId, ContactId, ListId, OrgId};
use crate::store::helpers::ids_json;
use crate::store::{OptSource, Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;

pub type Attributes = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone)]
pub struct ContactRow {
    pub id: ContactId,
    pub address: Address,
    pub name: Option<String>,
    pub attributes: Attributes,
    /// The stored attributes were too large to read (a row from before the contact rules):
    /// `attributes` is empty. See [`bounded_contact_fields`].
    pub attributes_truncated: bool,
    pub unsubscribed: bool,
    /// The lists the contact belongs to, in id order.
    pub list_ids: Vec<ListId>,
    /// The organisation's suppression of the contact's address (a STOP, a bounce, a
    /// complaint): no campaign sends to it, whatever `unsubscribed` says.
    pub suppression: Option<SuppressionRow>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new contact.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub address: Address,
    pub name: Option<String>,
    pub attributes: Attributes,
    pub unsubscribed: bool,
    pub list_ids: Vec<ListId>,
}

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ContactChange {
    /// `Some(None)` clears the name.
    pub name: Option<Option<String>>,
    /// Replaces every attribute.
    pub attributes: Option<Attributes>,
    /// true: contacts no campaign sends to (unsubscribed, or suppressed); false: the
    /// subscribed ones (neither).
    pub unsubscribed: Option<bool>,
}

/// Which contacts a page holds.
#[derive(Debug, Clone, Default)]
pub struct ContactFilter {
    /// Case-insensitive substring of the address or the name.
    pub q: Option<String>,
    /// Members of this list, or the matches of this segment.
    pub list_id: Option<ListId>,
    pub unsubscribed: Option<bool>,
    /// Contacts a segment filter matches (docs/SEGMENTS.md).
    pub matching: Option<crate::contact_filter::Filter>,
}

#[derive(Debug, Clone)]
pub struct ListRow {
    pub id: ListId,
    pub name: String,
    /// Contacts added to the list; for a segment, the contacts its filter matches, once
    /// [`Store::count_segment_members`] has counted them (0 before).
    pub members: i64,
    pub created_at: i64,
    /// A segment's filter (docs/SEGMENTS.md); None for a list whose members are added.
    pub filter: Option<String>,
    /// Why a segment's filter cannot run now (a list it names was renamed or deleted).
    pub filter_problem: Option<String>,
}

/// The outcome of deleting a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListDeletion {
    Deleted,
    /// Campaigns (id, name) use the list, which therefore stays.
    InUse(Vec<(CampaignId, String)>),
}

#[derive(Debug, Clone, Serialize)]
pub struct SuppressionRow {
    pub address: String,
    pub reason: String,
    pub created_at: i64,
}

/// A kind of row an API request can name in bulk (`list_ids`, `contact_ids`), with the
/// table it lives in.
pub trait OrgRow: crate::ids::TypedId + Into<i64> {
    const TABLE: &'static str;
}

impl OrgRow for ListId {
    const TABLE: &'static str = "lists";
}

impl OrgRow for ContactId {
    const TABLE: &'static str = "contacts";
}

/// A value bound to a dynamically built statement.
pub(in crate::store) enum Bind {
    Int(i64),
    Real(f64),
    Text(String),
}

impl Bind {
    /// Adds the value to `binds` and returns its placeholder (`$3`).
    pub(in crate::store) fn push(binds: &mut Vec<Bind>, value: Bind) -> String {
        binds.push(value);
        format!("${}", binds.len())
    }
}

pub(in crate::store) fn query_with(
    sql: String,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(i),
            Bind::Real(r) => q.bind(r),
            Bind::Text(s) => q.bind(s),
        };
    }
    q
}

/// A contact's `name`, `attributes` and `attributes_truncated` columns as every read of
/// contacts selects them (the API and dashboard here, template previews, the sender's
/// claims and the in-doubt checks), bounded in SQL whatever is stored.
///
/// Rows stored before the contact rules ([`crate::contact_rules`]) applied to every write
/// (a CSV import once stored a 50 MB name, 100,000 attributes, 5 MB cells) would otherwise
/// be read whole: one page of 500 such contacts is gigabytes, and each viewer's read holds
/// its own copy. So, before a byte leaves the database:
/// * a name longer than `MAX_NAME` characters comes back cut to `MAX_NAME` characters
///   followed by `…` (still a string: the JSON shape does not change);
/// * attributes whose JSON text is over `MAX_READ_ATTRIBUTES_BYTES` (far above anything
///   the rules allow) come back as `{}` with `attributes_truncated` = 1, which the API shows
///   as `"attributes_truncated": true` on that contact only (every other contact's JSON
///   is as before). Templates then see no attributes for it.
///
/// The stored row is left as it is: a PATCH with a name or attributes within the rules
/// repairs it. `alias` is the contacts table's alias in the query; in a LEFT JOIN with no
/// contact every column is NULL (attributes_truncated 0).
pub(in crate::store) fn bounded_contact_fields(alias: &str) -> String {
    use crate::contact_rules::{MAX_NAME, MAX_READ_ATTRIBUTES_BYTES, TRUNCATION_MARK};
    let a = alias;
    format!(
        "CASE WHEN length({a}.name) > {MAX_NAME} \
           THEN substr({a}.name, 1, {MAX_NAME}) || '{TRUNCATION_MARK}' ELSE {a}.name END AS name, \
         CASE WHEN octet_length({a}.attributes) > {MAX_READ_ATTRIBUTES_BYTES} \
           THEN '{{}}' ELSE {a}.attributes END AS attributes, \
         CAST(CASE WHEN octet_length({a}.attributes) > {MAX_READ_ATTRIBUTES_BYTES} \
           THEN 1 ELSE 0 END AS BIGINT) AS attributes_truncated"
    )
}

fn contact_columns() -> String {
    format!(
        "c.id, c.address, {}, c.unsubscribed, c.created_at, c.updated_at",
        bounded_contact_fields("c")
    )
}
pub(super) const LIST_COLUMNS: &str = "l.id, l.name, l.created_at, l.filter, \
     (SELECT count(*) FROM list_members m WHERE m.list_id = l.id) AS members";

fn contact_from_row(row: &AnyRow) -> Result<ContactRow, StoreError> {
    let id: ContactId = row.try_get("id")?;
    let raw: String = row.try_get("attributes")?;
    let attributes = match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "contact {id} has attributes that are not a JSON object"
            )));
        }
    };
    Ok(ContactRow {
        id,
        address: row.try_get("address")?,
        name: row.try_get("name")?,
        attributes,
        attributes_truncated: row.try_get::<i64, _>("attributes_truncated")? != 0,
        unsubscribed: row.try_get::<i64, _>("unsubscribed")? != 0,
        list_ids: Vec::new(),
        suppression: None,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn list_row(row: &AnyRow) -> Result<ListRow, StoreError> {
    Ok(ListRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        members: row.try_get("members")?,
        created_at: row.try_get("created_at")?,
        filter: row.try_get("filter")?,
        filter_problem: None,
    })
}

fn suppression_row(row: &AnyRow) -> Result<SuppressionRow, StoreError> {
    Ok(SuppressionRow {
        address: row.try_get("address")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
    })
}

/// `%`, `_` and `\` taken literally in a `LIKE … ESCAPE '\'` pattern.
pub fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for ch in q.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

fn contact_conflict(e: sqlx::Error, address: &str) -> StoreError {
    StoreError::from_unique(e, || {
        format!("a contact with the address `{address}` already exists")
    })
}

pub(super) fn list_conflict(e: sqlx::Error, name: &str) -> StoreError {
    StoreError::from_unique(e, || format!("a list named `{name}` already exists"))
}

fn contact_missing(id: ContactId) -> StoreError {
    StoreError::NotFound(format!("there is no contact `{id}`"))
}

pub(super) fn list_missing(id: ListId) -> StoreError {
    StoreError::NotFound(format!("there is no list `{id}`"))
}

impl Store {
    // ----------------------------------------------------------------------------------
    // Contacts
    // ----------------------------------------------------------------------------------

    /// Contacts of the organisation with an id above `after`, in id order, at most `limit`.
    pub async fn org_contacts(
        &self,
        org_id: OrgId,
        filter: &ContactFilter,
        after: ContactId,
        limit: i64,
    ) -> Result<Vec<ContactRow>, StoreError> {
        let mut sql = format!(
            "SELECT {} FROM contacts c WHERE c.org_id = $1 AND c.id > $2",
            contact_columns()
        );
        let mut binds = vec![Bind::Int(org_id.get()), Bind::Int(after.get())];
        if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
            binds.push(Bind::Text(like_pattern(q)));
            let n = binds.len();
            // Only the part of a name that reads return is searched: lower() of a 50 MB
            // name stored before the contact rules would copy it for every search.
            let max_name = crate::contact_rules::MAX_NAME;
            sql.push_str(&format!(
                " AND (lower(c.address) LIKE ${n} ESCAPE '\\' OR lower(substr(COALESCE(c.name, ''), 1, {max_name})) LIKE ${n} ESCAPE '\\')"
            ));
        }
        // Subscribed means a campaign would send to it: not unsubscribed and its address not
        // on the organisation's suppression list (a STOP, a bounce, a complaint). The
        // suppression is looked up in the same organisation ($1).
        match filter.unsubscribed {
            Some(true) => sql.push_str(
                " AND (c.unsubscribed <> 0 OR EXISTS (SELECT 1 FROM suppressions s WHERE s.org_id = $1 AND s.address = c.address))",
            ),
            Some(false) => sql.push_str(
                " AND c.unsubscribed = 0 AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.org_id = $1 AND s.address = c.address)",
            ),
            None => {}
        }
        if let Some(list_id) = filter.list_id {
            // A segment's members are its filter's matches, read live.
            match self
                .segment_of(org_id, list_id, crate::clock::now_ms())
                .await?
            {
                Some(segment) => {
                    let condition = segment.condition(self.dialect, &mut binds);
                    sql.push_str(&format!(" AND ({condition})"));
                }
                None => {
                    binds.push(Bind::Int(list_id.get()));
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM list_members m WHERE m.list_id = ${} AND m.contact_id = c.id)",
                        binds.len()
                    ));
                }
            }
        }
        if let Some(matching) = &filter.matching {
            let segment = self
                .segment_query(org_id, matching, crate::clock::now_ms())
                .await?;
            let condition = segment.condition(self.dialect, &mut binds);
            sql.push_str(&format!(" AND ({condition})"));
        }
        binds.push(Bind::Int(limit));
        sql.push_str(&format!(" ORDER BY c.id LIMIT ${}", binds.len()));
        let rows = query_with(sql, binds).fetch_all(&self.read).await?;
        let mut contacts = rows
            .iter()
            .map(contact_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.fill_list_ids(org_id, &mut contacts).await?;
        self.fill_suppressions(org_id, &mut contacts).await?;
        Ok(contacts)
    }

    async fn fill_list_ids(
        &self,
        org_id: OrgId,
        contacts: &mut [ContactRow],
    ) -> Result<(), StoreError> {
        if contacts.is_empty() {
            return Ok(());
        }
        let ids = ids_json(contacts.iter().map(|c| c.id));
        let sql = format!(
            "SELECT m.contact_id, m.list_id FROM list_members m JOIN lists l ON l.id = m.list_id \
             WHERE l.org_id = $1 AND m.contact_id IN {} ORDER BY m.contact_id, m.list_id",
            self.dialect.json_ids("$2")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(ids)
            .fetch_all(&self.read)
            .await?;
        let mut by_contact: BTreeMap<ContactId, Vec<ListId>> = BTreeMap::new();
        for r in &rows {
            by_contact
                .entry(r.try_get("contact_id")?)
                .or_default()
                .push(r.try_get("list_id")?);
        }
        for c in contacts {
            c.list_ids = by_contact.remove(&c.id).unwrap_or_default();
        }
        Ok(())
    }

    pub async fn org_contact(
        &self,
        org_id: OrgId,
        id: ContactId,
    ) -> Result<ContactRow, StoreError> {
        let sql = format!(
            "SELECT {} FROM contacts c WHERE c.org_id = $1 AND c.id = $2",
            contact_columns()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| contact_missing(id))?;
        let mut contacts = vec![contact_from_row(&row)?];
        self.fill_list_ids(org_id, &mut contacts).await?;
        self.fill_suppressions(org_id, &mut contacts).await?;
        contacts.pop().ok_or_else(|| contact_missing(id))
    }

    /// Creates a contact and adds it to those of `list_ids` that belong to the organisation
    /// (check them first with [`Store::unknown_org_ids`]). An existing address is a conflict.
    pub async fn create_org_contact(
        &self,
        org_id: OrgId,
        new: &NewContact,
    ) -> Result<ContactRow, StoreError> {
        self.refuse_segment_members(org_id, &new.list_ids).await?;
        let now = crate::clock::now_ms();
        let mut tx = self.begin().await?;
        let id: ContactId = sqlx::query_scalar(
            "INSERT INTO contacts (org_id, address, name, attributes, unsubscribed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(org_id)
        .bind(&new.address)
        .bind(new.name.as_deref())
        .bind(serde_json::Value::Object(new.attributes.clone()).to_string())
        .bind(i64::from(new.unsubscribed))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| contact_conflict(e, new.address.as_str()))?;
        if !new.list_ids.is_empty() {
            let sql = format!(
                "INSERT INTO list_members (list_id, contact_id, added_at) \
                 SELECT l.id, $2, $3 FROM lists l WHERE l.org_id = $1 AND l.filter IS NULL AND l.id IN {} \
                 ON CONFLICT (list_id, contact_id) DO NOTHING",
                self.dialect.json_ids("$4")
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(org_id)
                .bind(id)
                .bind(now)
                .bind(ids_json(new.list_ids.iter().copied()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.org_contact(org_id, id).await
    }

    pub async fn update_org_contact(
        &self,
        org_id: OrgId,
        id: ContactId,
        change: &ContactChange,
    ) -> Result<ContactRow, StoreError> {
        let mut binds = vec![Bind::Int(org_id.get()), Bind::Int(id.get())];
        let mut sets: Vec<String> = Vec::new();
        if let Some(name) = &change.name {
            match name {
                Some(n) => {
                    binds.push(Bind::Text(n.clone()));
                    sets.push(format!("name = ${}", binds.len()));
                }
                None => sets.push("name = NULL".into()),
            }
        }
        if let Some(attributes) = &change.attributes {
            binds.push(Bind::Text(
                serde_json::Value::Object(attributes.clone()).to_string(),
            ));
            sets.push(format!("attributes = ${}", binds.len()));
        }
        if let Some(u) = change.unsubscribed {
            binds.push(Bind::Int(i64::from(u)));
            sets.push(format!("unsubscribed = ${}", binds.len()));
        }
        binds.push(Bind::Int(crate::clock::now_ms()));
        sets.push(format!("updated_at = ${}", binds.len()));
        let sql = format!(
            "UPDATE contacts SET {} WHERE org_id = $1 AND id = $2",
            sets.join(", ")
        );
        let mut tx = self.begin().await?;
        // A change of the flag (only a change) is a contact event, in this transaction.
        let flipped: Option<String> = match change.unsubscribed {
            Some(u) => sqlx::query_scalar(
                "UPDATE contacts SET unsubscribed = $3 WHERE org_id = $1 AND id = $2 AND unsubscribed <> $3 RETURNING address",
            )
            .bind(org_id)
            .bind(id)
            .bind(i64::from(u))
            .fetch_optional(&mut *tx)
            .await?,
            None => None,
        };
        let r = query_with(sql, binds).execute(&mut *tx).await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(contact_missing(id));
        }
        if let (Some(address), Some(u)) = (flipped, change.unsubscribed) {
            crate::store::events::outbox::emit_contact_change(
                &mut tx,
                org_id,
                &address,
                u,
                &OptSource::new("contact_update", None, None),
                None,
                crate::clock::now_ms(),
            )
            .await?;
        }
        tx.commit().await?;
        self.org_contact(org_id, id).await
    }

    /// Deletes a contact and its list memberships. Messages already sent keep their
    /// address (they hold it themselves).
    pub async fn delete_org_contact(&self, org_id: OrgId, id: ContactId) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM list_members WHERE contact_id IN (SELECT id FROM contacts WHERE org_id = $1 AND id = $2)",
        )
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query("DELETE FROM contacts WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(contact_missing(id));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Those of `ids` that are not rows of the organisation (its lists, its contacts), in
    /// the order given.
    pub async fn unknown_org_ids<T: OrgRow>(
        &self,
        org_id: OrgId,
        ids: &[T],
    ) -> Result<Vec<T>, StoreError> {
        let table = T::TABLE;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id FROM {table} WHERE org_id = $1 AND id IN {}",
            self.dialect.json_ids("$2")
        );
        let found: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(ids_json(ids.iter().copied()))
            .fetch_all(&self.read)
            .await?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !found.contains(&id.row()))
            .collect())
    }

    // ----------------------------------------------------------------------------------
    // Suppressions
    // ----------------------------------------------------------------------------------

    /// Suppressed addresses above `after`, in address order, at most `limit`.
    pub async fn org_suppressions(
        &self,
        org_id: OrgId,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SuppressionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT address, reason, created_at FROM suppressions \
             WHERE org_id = $1 AND address > $2 ORDER BY address LIMIT $3",
        )
        .bind(org_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(suppression_row).collect()
    }

    /// Suppresses an address; for one already suppressed, a given reason replaces the old
    /// one. Returns the row and whether it is new.
    pub async fn upsert_org_suppression(
        &self,
        org_id: OrgId,
        address: &str,
        reason: Option<&str>,
        default_reason: &str,
    ) -> Result<(SuppressionRow, bool), StoreError> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO suppressions (org_id, address, reason, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, address) DO NOTHING",
        )
        .bind(org_id)
        .bind(address)
        .bind(reason.unwrap_or(default_reason))
        .bind(crate::clock::now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if inserted {
            crate::store::events::outbox::emit_contact_change(
                &mut tx,
                org_id,
                address,
                true,
                &OptSource::API,
                Some(reason.unwrap_or(default_reason)),
                crate::clock::now_ms(),
            )
            .await?;
        }
        if let (false, Some(reason)) = (inserted, reason) {
            sqlx::query("UPDATE suppressions SET reason = $3 WHERE org_id = $1 AND address = $2")
                .bind(org_id)
                .bind(address)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "SELECT address, reason, created_at FROM suppressions WHERE org_id = $1 AND address = $2",
        )
        .bind(org_id)
        .bind(address)
        .fetch_one(&mut *tx)
        .await?;
        let row = suppression_row(&row)?;
        tx.commit().await?;
        Ok((row, inserted))
    }
}
