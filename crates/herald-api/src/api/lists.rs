//! Lists of the caller's organisation and their members, and segments: lists defined by a
//! filter on the contacts (docs/SEGMENTS.md), counted live and frozen when a campaign
//! starts. Deleting a list removes its memberships, never the contacts; a list a campaign
//! uses cannot be deleted.

use super::auth::{AsEditor, AsViewer};
use super::check_name;
use super::contacts::{Contacts, check_ids, contacts_page};
use super::problem::ApiQuery;
use super::problem::{ApiError, ApiJson, ApiPath, ApiResult, Problem};
use super::{ApiState, Page, PageParams, decode, timestamp};
use crate::contact_filter::{self, Filter};
use crate::ids::{ContactId, ListId, OrgId};
use crate::store::StoreError;
use crate::store::directory::{ContactFilter, ListDeletion, ListRow};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_lists, create_list))
        .routes(routes!(get_list, update_list, delete_list))
        .routes(routes!(list_members, add_members))
        .routes(routes!(remove_member))
        .routes(routes!(count_segment))
}

/// Contact ids accepted by one request to add members.
const MAX_MEMBERS_PER_REQUEST: usize = 1000;

#[derive(Debug, Serialize, ToSchema)]
pub struct List {
    #[schema(example = "lst_1")]
    pub id: String,
    #[schema(example = "customers")]
    pub name: String,
    /// How many contacts belong to the list; for a segment, how many its filter matches
    /// now.
    pub members: i64,
    pub created_at: String,
    /// A segment's filter (docs/SEGMENTS.md), in its canonical form; null for a list whose
    /// members are added.
    #[schema(example = "attributes.plan = \"gold\" and created since 30d")]
    pub filter: Option<String>,
    /// Why a segment's filter cannot run now (a list it names was renamed or deleted);
    /// null when it can.
    pub filter_problem: Option<String>,
}

impl From<ListRow> for List {
    fn from(l: ListRow) -> List {
        List {
            id: l.id.to_string(),
            name: l.name,
            members: l.members,
            created_at: timestamp(l.created_at),
            filter: l.filter,
            filter_problem: l.filter_problem,
        }
    }
}

/// One list or segment with its members counted (a segment's live).
async fn counted(state: &ApiState, org_id: OrgId, id: ListId) -> ApiResult<List> {
    let mut rows = vec![state.store.org_list(org_id, id).await?];
    state.store.count_segment_members(org_id, &mut rows).await?;
    Ok(rows.remove(0).into())
}

/// A filter from a request, parsed: errors name the `filter` field, the place in the text
/// and the fix.
pub fn parse_filter(field: &str, text: &str) -> ApiResult<Filter> {
    contact_filter::parse(text)
        .map_err(|e| ApiError::invalid(field, "filter_syntax", e.to_string()))
}

/// The store's refusal of a filter (a list it names is missing or a segment), as a problem
/// of the `filter` field.
fn filter_refused(field: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(m) => ApiError::invalid(field, "unknown_list", m),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentCountRequest {
    /// The filter to count (docs/SEGMENTS.md), at most 4000 characters.
    #[schema(
        example = "attributes.plan = \"gold\" and created since 30d",
        max_length = 4000
    )]
    pub filter: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SegmentCount {
    /// The organisation's contacts the filter matches now (unsubscribed and suppressed
    /// ones included: a campaign's start skips them, and its estimate counts them).
    pub contacts: i64,
    /// The filter in its canonical form, as a segment stores it.
    pub filter: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Lists {
    pub items: Vec<List>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewList {
    /// 1 to 200 characters, unique in the organisation.
    #[schema(example = "customers")]
    pub name: String,
    /// Makes a segment: the list's members are the contacts this filter matches
    /// (docs/SEGMENTS.md), counted live and frozen when a campaign starts. Omit for a list
    /// whose members are added.
    #[schema(example = "attributes.plan = \"gold\"", max_length = 4000)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListChange {
    /// The new name, unique in the organisation.
    #[schema(example = "newsletter")]
    pub name: Option<String>,
    /// A segment's new filter (only a segment has one). Campaigns already started keep
    /// the recipients frozen at their start.
    #[schema(max_length = 4000)]
    pub filter: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMembers {
    /// Contacts to add (1 to 1000); contacts already in the list stay.
    #[schema(example = json!(["con_1", "con_2"]))]
    pub contact_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembersAdded {
    /// Contacts that were not members before.
    pub added: u64,
    pub list: List,
}

/// Lists and segments of the organisation with their member counts (a segment's counted
/// live), in creation order.
#[utoipa::path(get, path = "/lists", tag = "lists",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams),
    responses(
        (status = 200, body = Lists),
    ))]
async fn list_lists(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<Lists>> {
    let limit = page.limit()?;
    let mut rows = state
        .store
        .org_lists(p.org_id, page.after_id()?, limit + 1)
        .await?;
    state
        .store
        .count_segment_members(p.org_id, &mut rows)
        .await?;
    let page = Page::from_rows(rows, limit, |l| l.id, List::from);
    Ok(axum::Json(Lists {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Create an empty list, or a segment (with `filter`).
#[utoipa::path(post, path = "/lists", tag = "lists",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key, same response, no second effect")),
    request_body = NewList,
    responses(
        (status = 201, body = List, headers(("Location" = String, description = "The new list"))),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The filter does not parse, or names a list the organisation does not have", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_list(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiJson(body): ApiJson<NewList>,
) -> ApiResult<Response> {
    let name = check_name("name", &body.name)?;
    let list = match &body.filter {
        None => state.store.create_org_list(p.org_id, &name).await?,
        Some(text) => {
            let filter = parse_filter("filter", text)?;
            let id = state
                .store
                .create_segment(p.org_id, &name, &filter)
                .await
                .map_err(|e| filter_refused("filter", e))?;
            state.store.org_list(p.org_id, id).await?
        }
    };
    tracing::info!(
        org_id = %p.org_id,
        list_id = %list.id,
        actor = p.actor,
        segment = list.filter.is_some(),
        "list created"
    );
    let list = counted(&state, p.org_id, list.id).await?;
    let location = format!("/api/v1/lists/{}", list.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(list),
    )
        .into_response())
}

/// One list.
#[utoipa::path(get, path = "/lists/{id}", tag = "lists",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "List id")),
    responses(
        (status = 200, body = List),
    ))]
async fn get_list(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<List>> {
    let id = decode::<ListId>(&id)?;
    Ok(axum::Json(counted(&state, p.org_id, id).await?))
}

/// Rename a list or segment, or change a segment's filter.
#[utoipa::path(patch, path = "/lists/{id}", tag = "lists",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "List id")),
    request_body = ListChange,
    responses(
        (status = 200, body = List),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Nothing to change, a filter for a list, or a filter that does not parse", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_list(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ListChange>,
) -> ApiResult<axum::Json<List>> {
    let id = decode::<ListId>(&id)?;
    let name = body
        .name
        .as_deref()
        .map(|n| check_name("name", n))
        .transpose()?;
    let filter = body
        .filter
        .as_deref()
        .map(|f| parse_filter("filter", f))
        .transpose()?;
    if name.is_none() && filter.is_none() {
        return Err(ApiError::invalid(
            "name",
            "required",
            "give a new `name`, a segment's new `filter`, or both",
        ));
    }
    // Everything that can refuse the change is checked before either write.
    let current = state.store.org_list(p.org_id, id).await?;
    if let Some(filter) = &filter {
        if current.filter.is_none() {
            return Err(ApiError::invalid(
                "filter",
                "segment_only",
                format!(
                    "list `{id}` is a list, not a segment: its members are added, so it has no filter; create a segment instead"
                ),
            ));
        }
        state
            .store
            .check_segment_filter(p.org_id, filter)
            .await
            .map_err(|e| filter_refused("filter", e))?;
    }
    if let Some(name) = &name {
        state.store.rename_org_list(p.org_id, id, name).await?;
    }
    if let Some(filter) = &filter {
        state
            .store
            .update_segment_filter(p.org_id, id, filter)
            .await
            .map_err(|e| filter_refused("filter", e))?;
    }
    tracing::info!(
        org_id = %p.org_id,
        list_id = %id,
        actor = p.actor,
        renamed = name.is_some(),
        filter_changed = filter.is_some(),
        "list changed"
    );
    Ok(axum::Json(counted(&state, p.org_id, id).await?))
}

/// Delete a list: its members leave it, the contacts stay. A list a campaign uses cannot
/// be deleted (409 names the campaigns).
#[utoipa::path(delete, path = "/lists/{id}", tag = "lists",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "List id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Campaigns use the list", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_list(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let id = decode::<ListId>(&id)?;
    match state.store.delete_org_list(p.org_id, id).await? {
        ListDeletion::Deleted => {
            tracing::info!(
                org_id = %p.org_id,
                list_id = %id,
                actor = p.actor,
                "list deleted"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        ListDeletion::InUse(campaigns) => {
            let names: Vec<String> = campaigns
                .iter()
                .map(|(cid, name)| format!("{} ({name:?})", cid))
                .collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "list-in-use",
                "A campaign uses the list",
                format!(
                    "list `{}` is used by {} {}: a campaign keeps its list, so it cannot be deleted",
                    id,
                    if names.len() == 1 {
                        "campaign"
                    } else {
                        "campaigns"
                    },
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Members of a list, in contact creation order; a segment's are the contacts its filter
/// matches now.
#[utoipa::path(get, path = "/lists/{id}/members", tag = "lists",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "List id"), PageParams),
    responses(
        (status = 200, body = Contacts),
    ))]
async fn list_members(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<Contacts>> {
    let id = decode::<ListId>(&id)?;
    state.store.org_list(p.org_id, id).await?;
    let filter = ContactFilter {
        list_id: Some(id),
        ..ContactFilter::default()
    };
    Ok(axum::Json(
        contacts_page(&state, p.org_id, &filter, &page).await?,
    ))
}

/// Add contacts to a list. Adding a member again is not an error.
#[utoipa::path(post, path = "/lists/{id}/members", tag = "lists",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(("id" = String, Path, description = "List id")),
    request_body = NewMembers,
    responses(
        (status = 200, body = MembersAdded),
        (status = 409, description = "The list is a segment: its members are its filter's matches", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An id names no contact of the organisation", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add_members(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewMembers>,
) -> ApiResult<axum::Json<MembersAdded>> {
    let id = decode::<ListId>(&id)?;
    state.store.org_list(p.org_id, id).await?;
    if body.contact_ids.is_empty() {
        return Err(ApiError::invalid(
            "contact_ids",
            "min_items",
            "give at least one contact id",
        ));
    }
    if body.contact_ids.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(ApiError::invalid(
            "contact_ids",
            "max_items",
            format!("at most {MAX_MEMBERS_PER_REQUEST} contact ids per request"),
        ));
    }
    let contact_ids =
        check_ids::<ContactId>(&state, p.org_id, "contact_ids", &body.contact_ids).await?;
    let added = state
        .store
        .add_org_list_members(p.org_id, id, &contact_ids)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        list_id = %id,
        actor = p.actor,
        added,
        "list members added"
    );
    Ok(axum::Json(MembersAdded {
        added,
        list: counted(&state, p.org_id, id).await?,
    }))
}

/// Remove a contact from a list (the contact stays).
#[utoipa::path(delete, path = "/lists/{id}/members/{contact_id}", tag = "lists",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    params(
        ("id" = String, Path, description = "List id"),
        ("contact_id" = String, Path, description = "Contact id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such list, or the contact is not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The list is a segment: its members are its filter's matches", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_member(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiPath((id, contact_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let id = decode::<ListId>(&id)?;
    let contact_id = decode::<ContactId>(&contact_id)?;
    state.store.org_list(p.org_id, id).await?;
    state
        .store
        .remove_org_list_member(p.org_id, id, contact_id)
        .await?;
    tracing::info!(
        org_id = %p.org_id,
        list_id = %id,
        contact_id = %contact_id,
        actor = p.actor,
        "list member removed"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Count the contacts a filter matches now, before saving it as a segment. The filter is
/// checked as a segment's would be: errors name the field, the place and the fix.
#[utoipa::path(post, path = "/segments/count", tag = "lists",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    request_body = SegmentCountRequest,
    responses(
        (status = 200, body = SegmentCount),
        (status = 422, description = "The filter does not parse, or names a list the organisation does not have", body = Problem, content_type = "application/problem+json"),
    ))]
async fn count_segment(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiJson(body): ApiJson<SegmentCountRequest>,
) -> ApiResult<axum::Json<SegmentCount>> {
    let filter = parse_filter("filter", &body.filter)?;
    let contacts = state
        .store
        .count_matching(p.org_id, &filter)
        .await
        .map_err(|e| filter_refused("filter", e))?;
    Ok(axum::Json(SegmentCount {
        contacts,
        filter: filter.to_string(),
    }))
}
