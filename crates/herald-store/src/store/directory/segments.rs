//! Segments (docs/SEGMENTS.md): lists whose members are the organisation's contacts that
//! match a filter (`herald_core::contact_filter`). A segment is a row of `lists` with its
//! filter's canonical text in `filter`; it has no `list_members`. Its filter is compiled
//! here to one SQL condition on the contact `c`, with the same meaning on both databases
//! (the dialect supplies how each reads an attribute), and every value bound as a
//! parameter. It is counted live and frozen into messages when a campaign starts
//! (`campaigns::lifecycle::start_campaign`).

use super::admin::{Bind, query_with};
use crate::contact_filter::{Comparison, Condition, Field, Filter, Test, Value};
use crate::ids::{ListId, OrgId};
use crate::store::dialect::Dialect;
use crate::store::{Store, StoreError};
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;

const DAY_MS: i64 = 86_400_000;

/// A segment's filter made ready to run: its list names resolved to the organisation's
/// lists, and the time it is evaluated at (for `30d` and friends).
pub(in crate::store) struct SegmentQuery {
    filter: Filter,
    lists: HashMap<String, ListId>,
    now_ms: i64,
}

impl SegmentQuery {
    /// The filter's canonical text.
    pub(in crate::store) fn filter_text(&self) -> String {
        self.filter.to_string()
    }

    /// The SQL condition on contact `c`, its values appended to `binds`.
    pub(in crate::store) fn condition(&self, dialect: Dialect, binds: &mut Vec<Bind>) -> String {
        self.compile(dialect, &self.filter, binds)
    }

    fn compile(&self, dialect: Dialect, filter: &Filter, binds: &mut Vec<Bind>) -> String {
        match filter {
            Filter::Condition(c) => format!("COALESCE(({}), FALSE)", self.leaf(dialect, c, binds)),
            Filter::Not(inner) => format!("NOT ({})", self.compile(dialect, inner, binds)),
            Filter::And(parts) | Filter::Or(parts) => {
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = parts
                    .iter()
                    .map(|p| format!("({})", self.compile(dialect, p, binds)))
                    .collect();
                parts.join(joiner)
            }
        }
    }

    fn leaf(&self, dialect: Dialect, c: &Condition, binds: &mut Vec<Bind>) -> String {
        match &c.field {
            Field::List => self.list_condition(&c.test, binds),
            Field::Created | Field::Updated => {
                let column = if c.field == Field::Created {
                    "c.created_at"
                } else {
                    "c.updated_at"
                };
                match &c.test {
                    Test::Compare(op, value) => {
                        time_condition(column, *op, value, self.now_ms, binds)
                    }
                    // The parser allows only comparisons on times.
                    _ => "FALSE".into(),
                }
            }
            Field::Name | Field::Address | Field::Attribute(_) => {
                let (text, number) = match &c.field {
                    Field::Name => ("c.name".to_string(), None),
                    Field::Address => ("c.address".to_string(), None),
                    Field::Attribute(key) => {
                        let key = Bind::push(binds, Bind::Text(dialect.attribute_key(key)));
                        (
                            dialect.attribute_text(&key),
                            Some(dialect.attribute_number(&key)),
                        )
                    }
                    _ => unreachable_field(),
                };
                value_condition(dialect, &text, number.as_deref(), &c.test, binds)
            }
        }
    }

    fn list_condition(&self, test: &Test, binds: &mut Vec<Bind>) -> String {
        let ids = |values: &[Value], binds: &mut Vec<Bind>| -> String {
            let placeholders: Vec<String> = values
                .iter()
                .filter_map(|v| match v {
                    Value::Text(name) => self.lists.get(name),
                    _ => None,
                })
                .map(|id| Bind::push(binds, Bind::Int(id.get())))
                .collect();
            if placeholders.is_empty() {
                "NULL".into()
            } else {
                placeholders.join(", ")
            }
        };
        let member = |ids: String| {
            format!(
                "EXISTS (SELECT 1 FROM list_members lm WHERE lm.contact_id = c.id AND lm.list_id IN ({ids}))"
            )
        };
        match test {
            Test::Equals(v) => member(ids(std::slice::from_ref(v), binds)),
            Test::NotEquals(v) => format!("NOT {}", member(ids(std::slice::from_ref(v), binds))),
            Test::In(values) => member(ids(values, binds)),
            _ => "FALSE".into(),
        }
    }
}

/// The parser admits only the fields matched above; this keeps the match total.
fn unreachable_field() -> (String, Option<String>) {
    ("NULL".into(), None)
}

/// A condition on a text field (`text`) that may also read as a number (`number`, for
/// attributes).
fn value_condition(
    dialect: Dialect,
    text: &str,
    number: Option<&str>,
    test: &Test,
    binds: &mut Vec<Bind>,
) -> String {
    let equals = |value: &Value, binds: &mut Vec<Bind>| -> String {
        match (value, number) {
            (Value::Number(n), Some(number)) => {
                format!("{number} = {}", Bind::push(binds, Bind::Real(*n)))
            }
            (Value::Bool(b), _) => {
                format!("{text} = {}", Bind::push(binds, Bind::Text(b.to_string())))
            }
            (v, _) => {
                let shown = match v {
                    Value::Text(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{text} = {}", Bind::push(binds, Bind::Text(shown)))
            }
        }
    };
    match test {
        Test::Equals(v) => equals(v, binds),
        // Different, or missing: a contact without the attribute is not `= "gold"`.
        Test::NotEquals(v) => format!("NOT COALESCE(({}), FALSE)", equals(v, binds)),
        Test::In(values) => {
            let parts: Vec<String> = values.iter().map(|v| equals(v, binds)).collect();
            parts.join(" OR ")
        }
        Test::Contains(needle) => {
            let pattern = Bind::push(binds, Bind::Text(like_pattern_ascii(needle)));
            format!("{} LIKE {pattern} ESCAPE '\\'", dialect.ascii_lower(text))
        }
        Test::Exists => format!("{text} IS NOT NULL AND {text} <> ''"),
        Test::Compare(op, Value::Number(n)) => match number {
            Some(number) => format!(
                "{number} {} {}",
                op.symbol(),
                Bind::push(binds, Bind::Real(*n))
            ),
            None => "FALSE".into(),
        },
        Test::Compare(op, Value::Date(d)) => format!(
            "{} {} {}",
            dialect.date_prefix(text),
            op.symbol(),
            Bind::push(binds, Bind::Text(d.clone()))
        ),
        // The parser allows no other comparison on these fields.
        Test::Compare(..) => "FALSE".into(),
    }
}

/// A comparison of a time column with a date, an instant or a time ago. A date is the
/// whole day, in UTC: `created <= 2026-01-31` includes that day, `created > 2026-01-31`
/// starts the next.
fn time_condition(
    column: &str,
    op: Comparison,
    value: &Value,
    now_ms: i64,
    binds: &mut Vec<Bind>,
) -> String {
    let Some(at) = value.instant(now_ms) else {
        return "FALSE".into();
    };
    let whole_day = matches!(value, Value::Date(_));
    let (symbol, bound) = match (op, whole_day) {
        (Comparison::LessOrEqual, true) => ("<", at + DAY_MS),
        (Comparison::Greater, true) => (">=", at + DAY_MS),
        (op, _) => (op.symbol(), at),
    };
    format!("{column} {symbol} {}", Bind::push(binds, Bind::Int(bound)))
}

/// A `LIKE … ESCAPE '\'` pattern that finds `needle` anywhere, its ASCII letters lowered
/// (the column side is lowered the same way on both databases).
fn like_pattern_ascii(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('%');
    for ch in needle.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch.to_ascii_lowercase());
    }
    p.push('%');
    p
}

fn invalid(message: String) -> StoreError {
    StoreError::Invalid(message)
}

impl Store {
    /// Readies a filter for the organisation: every list it names must be one of its lists
    /// whose members are added (not a segment). Errors name the list and the fix.
    pub(in crate::store) async fn segment_query(
        &self,
        org_id: OrgId,
        filter: &Filter,
        now_ms: i64,
    ) -> Result<SegmentQuery, StoreError> {
        // The lists it names, in one read (a filter may name a hundred in one `in`).
        let names = filter.list_names();
        let mut found: HashMap<String, (ListId, bool)> = HashMap::new();
        if !names.is_empty() {
            let sql = format!(
                "SELECT id, name, filter FROM lists WHERE org_id = $1 AND name IN {}",
                self.dialect.json_texts("$2")
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(org_id)
                .bind(serde_json::Value::from(names.clone()).to_string())
                .fetch_all(&self.read)
                .await?;
            for row in &rows {
                found.insert(
                    row.try_get("name")?,
                    (
                        row.try_get("id")?,
                        row.try_get::<Option<String>, _>("filter")?.is_some(),
                    ),
                );
            }
        }
        let mut lists = HashMap::new();
        for name in names {
            match found.get(name) {
                None => {
                    return Err(invalid(format!(
                        "filter, `list`: there is no list named \"{name}\" in this organisation: check the name (GET /api/v1/lists shows them)"
                    )));
                }
                Some((_, true)) => {
                    return Err(invalid(format!(
                        "filter, `list`: \"{name}\" is a segment, not a list: copy its conditions into this filter"
                    )));
                }
                Some((id, false)) => {
                    lists.insert(name.to_string(), *id);
                }
            }
        }
        Ok(SegmentQuery {
            filter: filter.clone(),
            lists,
            now_ms,
        })
    }

    /// Whether the filter can run for the organisation (every list it names is one of its
    /// lists, not a segment): the check a request makes before it streams.
    pub async fn check_segment_filter(
        &self,
        org_id: OrgId,
        filter: &Filter,
    ) -> Result<(), StoreError> {
        self.segment_query(org_id, filter, crate::clock::now_ms())
            .await
            .map(|_| ())
    }

    /// The stored filter of a segment, parsed and readied; None for a list.
    pub(in crate::store) async fn segment_of(
        &self,
        org_id: OrgId,
        list_id: ListId,
        now_ms: i64,
    ) -> Result<Option<SegmentQuery>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT filter FROM lists WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(list_id)
                .fetch_optional(&self.read)
                .await?
                .flatten();
        let Some(text) = text else {
            return Ok(None);
        };
        let filter = crate::contact_filter::parse(&text)
            .map_err(|e| invalid(format!("segment `{list_id}`: {e}: edit its filter")))?;
        self.segment_query(org_id, &filter, now_ms)
            .await
            .map(Some)
            .map_err(|e| match e {
                StoreError::Invalid(m) => invalid(format!(
                    "segment `{list_id}`: {m}; edit the segment's filter"
                )),
                other => other,
            })
    }

    /// How many of the organisation's contacts the filter matches now.
    pub async fn count_matching(&self, org_id: OrgId, filter: &Filter) -> Result<i64, StoreError> {
        let query = self
            .segment_query(org_id, filter, crate::clock::now_ms())
            .await?;
        self.count_segment(org_id, &query).await
    }

    pub(in crate::store) async fn count_segment(
        &self,
        org_id: OrgId,
        query: &SegmentQuery,
    ) -> Result<i64, StoreError> {
        let mut binds = vec![Bind::Int(org_id.get())];
        let condition = query.condition(self.dialect, &mut binds);
        let sql =
            format!("SELECT count(*) AS n FROM contacts c WHERE c.org_id = $1 AND ({condition})");
        let row = query_with(sql, binds).fetch_one(&self.read).await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a segment: a list defined by `filter`. A name the organisation already uses
    /// is a conflict.
    pub async fn create_segment(
        &self,
        org_id: OrgId,
        name: &str,
        filter: &Filter,
    ) -> Result<ListId, StoreError> {
        self.segment_query(org_id, filter, crate::clock::now_ms())
            .await?;
        let id: ListId = sqlx::query_scalar(
            "INSERT INTO lists (org_id, name, created_at, filter) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(org_id)
        .bind(name)
        .bind(crate::clock::now_ms())
        .bind(filter.to_string())
        .fetch_one(&self.write)
        .await
        .map_err(|e| {
            StoreError::from_unique(e, || format!("a list named `{name}` already exists"))
        })?;
        Ok(id)
    }

    /// Replaces a segment's filter. Campaigns already started keep the recipients frozen
    /// at their start; drafts and scheduled ones will use the new filter.
    pub async fn update_segment_filter(
        &self,
        org_id: OrgId,
        id: ListId,
        filter: &Filter,
    ) -> Result<(), StoreError> {
        self.segment_query(org_id, filter, crate::clock::now_ms())
            .await?;
        let r = sqlx::query(
            "UPDATE lists SET filter = $3 WHERE org_id = $1 AND id = $2 AND filter IS NOT NULL",
        )
        .bind(org_id)
        .bind(id)
        .bind(filter.to_string())
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM lists WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        Err(match exists {
            None => StoreError::NotFound(format!("there is no list `{id}`")),
            Some(_) => invalid(format!(
                "list `{id}` is a list, not a segment: its members are added, so it has no filter; create a segment instead"
            )),
        })
    }

    /// Refuses adding members to a segment: its members are its filter's matches.
    pub(in crate::store) async fn refuse_segment_members(
        &self,
        org_id: OrgId,
        list_ids: &[ListId],
    ) -> Result<(), StoreError> {
        for id in list_ids {
            let row = sqlx::query("SELECT name, filter FROM lists WHERE org_id = $1 AND id = $2")
                .bind(org_id)
                .bind(*id)
                .fetch_optional(&self.read)
                .await?;
            if let Some(row) = row
                && row.try_get::<Option<String>, _>("filter")?.is_some()
            {
                let name: String = row.try_get("name")?;
                return Err(segment_has_no_members(&name));
            }
        }
        Ok(())
    }
}

/// The error for adding contacts to a segment by hand.
pub(in crate::store) fn segment_has_no_members(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "`{name}` is a segment: its members are the contacts its filter matches, so none are added or removed by hand: use a list, or change the segment's filter"
    ))
}
