//! A draft's audience as its start would see it, read in keyset pages for the estimate
//! (docs/CAMPAIGNS.md): every contact of the campaign's list with what a template reads
//! (bounded as the sender reads it) and whether the start would skip it. The rule is the
//! start's (`lifecycle::start_campaign`): unsubscribed, then suppressed, then an address
//! the channel cannot reach; a test checks the two agree on both stores.

use crate::address::AddressKind;
use crate::ids::{ContactId, ListId, OrgId};
use crate::store::directory::bounded_contact_fields;
use crate::store::{Store, StoreError};
use sqlx::{AssertSqlSafe, Row};

/// Why the start would skip a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    Unsubscribed,
    Suppressed,
    /// Not an address the channel's kind delivers to.
    UnusableAddress,
}

impl SkipReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unsubscribed => "unsubscribed",
            SkipReason::Suppressed => "suppressed",
            SkipReason::UnusableAddress => "unusable_address",
        }
    }
}

/// One recipient of a draft.
#[derive(Debug, Clone)]
pub struct AudienceMember {
    pub contact_id: ContactId,
    pub address: String,
    pub name: Option<String>,
    /// The attributes as JSON text (`{}` when too large to read, as the sender sees them).
    pub attributes: String,
    pub skip: Option<SkipReason>,
}

impl Store {
    /// Up to `limit` members of the organisation's list with a contact id above `after`,
    /// judged for a channel that delivers to `required` addresses (None: any).
    pub async fn audience_page(
        &self,
        org_id: OrgId,
        list_id: ListId,
        required: Option<AddressKind>,
        after: ContactId,
        limit: i64,
    ) -> Result<Vec<AudienceMember>, StoreError> {
        // The page is the next `limit` members by the list's primary key (list_id,
        // contact_id), taken first in a subquery, then joined: planners with statistics
        // from before a large import otherwise hash-joined every member and contact for
        // each page (1.4 s a page at 1M on PostgreSQL; SQLite sorted them, 100 ms). The
        // list and the contacts are checked against the organisation in the query; the
        // contacts' check is written `org_id + 0` so that it filters the thousand rows
        // found by primary key instead of steering the plan to an index on org_id.
        let sql = format!(
            "SELECT c.id, c.address, {}, c.unsubscribed, \
             CASE WHEN s.address IS NULL THEN 0 ELSE 1 END AS suppressed \
             FROM (SELECT m.contact_id FROM list_members m \
                   WHERE m.list_id = $2 AND m.contact_id > $3 \
                   AND EXISTS (SELECT 1 FROM lists l WHERE l.id = $2 AND l.org_id = $1) \
                   ORDER BY m.contact_id LIMIT $4) lm \
             JOIN contacts c ON c.id = lm.contact_id \
             LEFT JOIN suppressions s ON s.org_id = $1 AND s.address = c.address \
             WHERE c.org_id + 0 = $1 ORDER BY lm.contact_id",
            bounded_contact_fields("c")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(list_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let address: String = r.try_get("address")?;
                let unusable = match required {
                    Some(AddressKind::Phone) => !address.starts_with('+'),
                    Some(AddressKind::Email) => !address.contains('@'),
                    None => false,
                };
                let skip = if r.try_get::<i64, _>("unsubscribed")? != 0 {
                    Some(SkipReason::Unsubscribed)
                } else if r.try_get::<i64, _>("suppressed")? != 0 {
                    Some(SkipReason::Suppressed)
                } else if unusable {
                    Some(SkipReason::UnusableAddress)
                } else {
                    None
                };
                Ok(AudienceMember {
                    contact_id: r.try_get("id")?,
                    address,
                    name: r.try_get("name")?,
                    attributes: r.try_get("attributes")?,
                    skip,
                })
            })
            .collect()
    }
}
