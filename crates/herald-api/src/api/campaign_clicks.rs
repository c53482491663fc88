//! A campaign's clicks on its tracked links (docs/CAMPAIGNS.md, "Link tracking"), as
//! `GET /campaigns/{id}/stats` and the campaign view show them: the counters are the
//! campaign's and its links' rows, which the click's transaction writes
//! (`Store::record_click`).

use super::ApiState;
use super::problem::ApiResult;
use crate::domain::Counts;
use crate::ids::{CampaignId, OrgId};
use crate::tracked_links::{click_rate as rate, reached};
use serde::Serialize;
use utoipa::ToSchema;

/// Clicks on one tracked link.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LinkClicks {
    /// 1-based, in the order the template first names the target.
    pub position: i64,
    #[schema(example = "https://example.com/offer")]
    pub url: String,
    /// Every counted click (link-preview bots and HEAD requests are not counted).
    pub clicks: i64,
    /// Messages with at least one counted click on this link.
    pub clicked: i64,
    /// `clicked` over the messages that reached the provider (`reached`), 0 to 1.
    pub click_rate: f64,
}

/// A campaign's clicks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClickStats {
    /// Messages accepted by the provider and not reported undelivered (sent, delivered,
    /// read): the base of every click rate.
    pub reached: i64,
    /// Messages with at least one counted click on any link.
    pub clicked: i64,
    /// Every counted click.
    pub clicks: i64,
    /// `clicked` over `reached`, 0 to 1 (4 decimals).
    pub click_rate: f64,
    /// Each tracked link; empty before the start or when the template has none.
    pub links: Vec<LinkClicks>,
}

/// The organisation's campaign's clicks, from its counters and its links' rows.
pub async fn click_stats(
    state: &ApiState,
    org_id: OrgId,
    campaign_id: CampaignId,
    counts: &Counts,
    clicked: i64,
    clicks: i64,
) -> ApiResult<ClickStats> {
    let reached = reached(counts);
    let links = state
        .store
        .campaign_links(org_id, campaign_id)
        .await?
        .into_iter()
        .map(|l| LinkClicks {
            position: l.position,
            click_rate: rate(l.clicked, reached),
            url: l.url,
            clicks: l.clicks,
            clicked: l.clicked,
        })
        .collect();
    Ok(ClickStats {
        reached,
        clicked,
        clicks,
        click_rate: rate(clicked, reached),
        links,
    })
}
