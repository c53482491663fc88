//! The replies inbox (docs/INBOX.md): the inbound SMS and WhatsApp messages of the caller's
//! organisation, as conversations (one per sending address) and as a list, and marking a
//! conversation read. The store writes them with the provider webhook that carried them
//! (`webhooks::inbound`); every query here is scoped by the caller's organisation.

use super::auth::{AsEditor, AsViewer};
use super::contacts::{invalid_query, search_text};
use super::problem::{ApiError, ApiJson, ApiQuery, ApiResult};
use super::{ApiState, Page, PageParams, decode, timestamp, timestamp_opt};
use crate::ids::{CampaignId, ReplyId};
use crate::store::replies::{Conversation as ConversationRow, Reply as ReplyRow, ReplyFilter};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations))
        .routes(routes!(list_replies))
        .routes(routes!(mark_read))
}

/// One inbound message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reply {
    #[schema(example = "rpl_5")]
    pub id: String,
    #[schema(example = "chn_1")]
    pub channel_id: String,
    /// The sender, normalised (E.164).
    #[schema(example = "+15005550101")]
    pub from: String,
    /// The organisation's contact with that address, when there is one.
    pub contact_id: Option<String>,
    pub contact_name: Option<String>,
    /// The campaign last sent to this address on this channel when the message arrived.
    pub campaign_id: Option<String>,
    #[schema(example = "Is the sale on Sunday too?")]
    pub body: String,
    /// `help`, `stop` or `start` when the whole message was that keyword or a synonym
    /// (INFO; STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT; YES, UNSTOP).
    pub keyword: Option<String>,
    /// What Herald answered: the organisation's help reply, or the STOP confirmation on a
    /// channel whose provider does not send one.
    pub auto_reply: Option<String>,
    /// How the answer went: `in_webhook_answer` (Twilio sends it), `pending`,
    /// `sent: <provider id>`, `failed: <why>`, or `provider_confirms` (the provider answers
    /// STOP itself).
    pub auto_reply_status: Option<String>,
    pub received_at: String,
    /// Null while unread.
    pub read_at: Option<String>,
}

impl From<ReplyRow> for Reply {
    fn from(r: ReplyRow) -> Reply {
        Reply {
            id: r.id.to_string(),
            channel_id: r.channel_id.to_string(),
            from: r.address,
            contact_id: r.contact_id.map(|c| c.to_string()),
            contact_name: r.contact_name,
            campaign_id: r.campaign_id.map(|c| c.to_string()),
            body: r.body,
            keyword: r.keyword,
            auto_reply: r.auto_reply,
            auto_reply_status: r.auto_reply_status,
            received_at: timestamp(r.received_at),
            read_at: timestamp_opt(r.read_at),
        }
    }
}

/// The organisation's replies from one address.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Conversation {
    /// The sender: pass as `address` to `GET /replies` for the whole conversation.
    #[schema(example = "+15005550101")]
    pub address: String,
    pub contact_id: Option<String>,
    pub contact_name: Option<String>,
    /// Replies from this address (matching the filters).
    pub replies: i64,
    /// Of those, unread.
    pub unread: i64,
    /// The newest.
    pub last: Reply,
}

impl From<ConversationRow> for Conversation {
    fn from(c: ConversationRow) -> Conversation {
        Conversation {
            address: c.address,
            contact_id: c.contact_id.map(|id| id.to_string()),
            contact_name: c.contact_name,
            replies: c.replies,
            unread: c.unread,
            last: c.last.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Conversations {
    pub items: Vec<Conversation>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replies {
    pub items: Vec<Reply>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplyQuery {
    /// true: only unread replies (conversations: those with an unread reply).
    pub unread: Option<bool>,
    /// Case-insensitive text in the message, the sender's address or the contact's name.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Only replies to this campaign (the campaign last sent to the sender); empty: all.
    #[param(example = "cmp_1", pattern = "^(cmp_[1-9][0-9]{0,17})?$")]
    pub campaign_id: Option<String>,
    /// Only this sender's replies (its conversation), as the conversation names it.
    #[param(example = "+15005550101", max_length = 320)]
    pub address: Option<String>,
}

fn filter(query: ReplyQuery) -> ApiResult<ReplyFilter> {
    let q = search_text(query.q)?;
    if query.address.as_ref().is_some_and(|a| a.contains('\0')) {
        return Err(invalid_query("address", "format", "must not contain NUL"));
    }
    if query
        .address
        .as_ref()
        .is_some_and(|a| a.chars().count() > 320)
    {
        return Err(invalid_query(
            "address",
            "max_length",
            "an address is at most 320 characters",
        ));
    }
    // Empty is no filter (a form's empty choice); anything else must be a campaign id. A
    // campaign of another organisation, or none, simply has no replies here.
    let campaign_id = match query.campaign_id.as_deref() {
        None | Some("") => None,
        Some(id) => Some(decode::<CampaignId>(id).map_err(|_| {
            invalid_query(
                "campaign_id",
                "format",
                format!("`{id}` is not a campaign id: write it as cmp_N"),
            )
        })?),
    };
    Ok(ReplyFilter {
        unread: query.unread.unwrap_or(false),
        q,
        campaign_id,
        address: query.address,
    })
}

/// The newest-first cursor: the previous page's last id (`before` it).
fn before(page: &PageParams) -> ApiResult<Option<ReplyId>> {
    let after = page.after()?;
    Ok((after > 0).then_some(ReplyId(after)))
}

/// Conversations of the organisation (one per sending address), the one with the newest
/// reply first.
#[utoipa::path(get, path = "/conversations", tag = "replies",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams, ReplyQuery),
    responses(
        (status = 200, body = Conversations),
    ))]
async fn list_conversations(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(query): ApiQuery<ReplyQuery>,
) -> ApiResult<axum::Json<Conversations>> {
    let limit = page.limit()?;
    let filter = filter(query)?;
    let rows = state
        .store
        .conversations(p.org_id, &filter, before(&page)?, limit + 1)
        .await?;
    let page = Page::from_rows(rows, limit, |c| c.last.id, Conversation::from);
    Ok(axum::Json(Conversations {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Replies of the organisation, newest first: all of them, one conversation's
/// (`address`), unread ones, a campaign's, or those matching a search.
#[utoipa::path(get, path = "/replies", tag = "replies",
    security(("api_key" = ["viewer"]), ("session" = ["viewer"])),
    params(PageParams, ReplyQuery),
    responses(
        (status = 200, body = Replies),
    ))]
async fn list_replies(
    State(state): State<ApiState>,
    AsViewer(p): AsViewer,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(query): ApiQuery<ReplyQuery>,
) -> ApiResult<axum::Json<Replies>> {
    let limit = page.limit()?;
    let filter = filter(query)?;
    let rows = state
        .store
        .replies(p.org_id, &filter, before(&page)?, limit + 1)
        .await?;
    let page = Page::from_rows(rows, limit, |r| r.id, Reply::from);
    Ok(axum::Json(Replies {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Which conversation to mark read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// The sender, as the conversation names it.
    #[schema(example = "+15005550101", max_length = 320)]
    pub address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MarkedRead {
    /// Replies that were unread and now are read.
    pub marked: u64,
}

/// Mark every unread reply from an address read.
#[utoipa::path(post, path = "/replies/read", tag = "replies",
    security(("api_key" = ["editor"]), ("session" = ["editor"])),
    request_body = MarkRead,
    responses(
        (status = 200, body = MarkedRead),
    ))]
async fn mark_read(
    State(state): State<ApiState>,
    AsEditor(p): AsEditor,
    ApiJson(body): ApiJson<MarkRead>,
) -> ApiResult<axum::Json<MarkedRead>> {
    if body.address.contains('\0') {
        return Err(ApiError::invalid(
            "address",
            "format",
            "must not contain NUL",
        ));
    }
    if body.address.chars().count() > 320 {
        return Err(ApiError::invalid(
            "address",
            "max_length",
            "an address is at most 320 characters",
        ));
    }
    let marked = state
        .store
        .mark_replies_read(p.org_id, &body.address, crate::clock::now_ms())
        .await?;
    tracing::info!(org_id = %p.org_id, actor = p.actor, marked, "replies marked read");
    Ok(axum::Json(MarkedRead { marked }))
}
