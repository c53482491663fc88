//! CSV exports (docs/CAMPAIGNS.md): a campaign's messages, the contacts and the
//! suppression list, streamed one page at a time (`export::Export`), so a million rows
//! take the memory of one page and a slow reader holds no database connection.

use super::ApiState;
use super::auth::AsViewer;
use super::campaigns::owned_status;
use super::contacts::{ContactQuery, check_matching, contact_filter};
use super::problem::{ApiPath, ApiQuery, ApiResult, Problem};
use crate::export::{Export, ExportOf};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(campaign_messages_csv))
        .routes(routes!(contacts_csv))
        .routes(routes!(suppressions_csv))
}

/// The export as a streamed `text/csv` attachment named `filename`. A database error after
/// the first chunk cannot change the status any more: the response is cut short (the
/// client sees an incomplete chunked body, never a file that looks whole) and it is logged.
fn csv_response(export: Export, filename: String) -> Response {
    let chunks = futures_util::stream::unfold(Some(export), |state| async move {
        let mut export = state?;
        match export.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk)), Some(export))),
            Ok(None) => {
                tracing::debug!(rows = export.rows(), "export finished");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = export.rows(), "export cut short by a database error");
                Some((Err(std::io::Error::other(e.to_string())), None))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// The campaign's messages as CSV, one row per message in creation order: address, contact,
/// status, the failure explained (code, reason, the provider's words), attempts, provider
/// id and when it was sent, delivered, read or failed. Cells a spreadsheet would run as a
/// formula are neutralised.
#[utoipa::path(get, path = "/campaigns/{id}/messages.csv", tag = "campaigns",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The messages, header row first (docs/CAMPAIGNS.md lists the columns)", body = String, content_type = "text/csv"),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
    ))]
async fn campaign_messages_csv(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let (id, _) = owned_status(&state, &p, &id).await?;
    tracing::info!(org_id = %p.org_id, campaign_id = %id, actor = p.actor, "campaign export");
    let export = Export::new(
        state.store.clone(),
        p.org_id,
        ExportOf::CampaignMessages(id),
    );
    Ok(csv_response(export, format!("{id}-messages.csv")))
}

/// The contacts as CSV, in creation order, filtered as `GET /contacts` filters them.
#[utoipa::path(get, path = "/contacts.csv", tag = "contacts",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(ContactQuery),
    responses(
        (status = 200, description = "The contacts, header row first (docs/CAMPAIGNS.md lists the columns)", body = String, content_type = "text/csv"),
        (status = 400, description = "A query parameter is not valid (a `filter` that does not parse or names no list)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The `list_id` names no list", body = Problem, content_type = "application/problem+json"),
    ))]
async fn contacts_csv(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(query): ApiQuery<ContactQuery>,
) -> ApiResult<Response> {
    let filter = contact_filter(query)?;
    if let Some(list_id) = filter.list_id {
        state.store.org_list(p.org_id, list_id).await?;
    }
    check_matching(&state, p.org_id, &filter).await?;
    tracing::info!(org_id = %p.org_id, actor = p.actor, "contacts export");
    let export = Export::new(state.store.clone(), p.org_id, ExportOf::Contacts(filter));
    Ok(csv_response(export, "contacts.csv".into()))
}

/// The suppression list as CSV, in address order.
#[utoipa::path(get, path = "/suppressions.csv", tag = "suppressions",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    responses(
        (status = 200, description = "The suppressed addresses, header row first", body = String, content_type = "text/csv"),
    ))]
async fn suppressions_csv(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
) -> ApiResult<Response> {
    tracing::info!(org_id = %p.org_id, actor = p.actor, "suppressions export");
    let export = Export::new(state.store.clone(), p.org_id, ExportOf::Suppressions);
    Ok(csv_response(export, "suppressions.csv".into()))
}
