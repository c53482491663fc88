//! Tracked links (docs/CAMPAIGNS.md, "Link tracking"): a campaign's `link("…")` targets,
//! written when it starts, and the clicks on them. A click is counted in one transaction
//! on four rows: the message's clicks on that link (`message_clicks`), the message, the
//! link and the campaign; the first click of a message on a link is what adds one to the
//! link's `clicked`, and its first click on any link adds one to the campaign's.

use crate::ids::{CampaignId, MessageId, OrgId};
use crate::store::campaigns::lifecycle::CampaignLock;
use crate::store::{Store, StoreError, Tx};
use crate::template::MessageTemplate;
use sqlx::Row;

/// One tracked link of a campaign and its counted clicks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignLink {
    /// 1-based, in the order the template first names the target.
    pub position: i64,
    pub url: String,
    /// Every counted click.
    pub clicks: i64,
    /// Messages with at least one counted click on this link.
    pub clicked: i64,
}

/// What a click on a tracked link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub campaign_id: CampaignId,
    /// Where to send the visitor.
    pub url: String,
    /// This click was counted and was the message's first on this link.
    pub first_on_link: bool,
    /// This click was counted (not a preview, not past the rate, not on a message in its
    /// campaign's archive).
    pub counted: bool,
}

impl Store {
    /// Writes the targets of the campaign's `link("…")` calls, in the start's transaction:
    /// from then on its body cannot change, and its messages' codes name these positions
    /// (the body's links first, then its email HTML part's others).
    pub(in crate::store) async fn freeze_links(
        &self,
        tx: &mut Tx,
        campaign_id: CampaignId,
        body: &str,
    ) -> Result<(), StoreError> {
        // A body that no longer compiles fails each message with the reason; it has no
        // links to count either.
        let Ok(template) = MessageTemplate::compile(body) else {
            return Ok(());
        };
        let email: Option<String> = sqlx::query_scalar("SELECT email FROM campaigns WHERE id = $1")
            .bind(campaign_id)
            .fetch_one(&mut **tx)
            .await?;
        let html_links = match crate::store::campaigns::lifecycle::email_from_json(email)? {
            Some(email) => email
                .compile()
                .map(|t| t.html_links().to_vec())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let targets = crate::email_content::link_targets(template.links(), &html_links);
        for (i, url) in targets.iter().enumerate() {
            sqlx::query(
                "INSERT INTO campaign_links (campaign_id, position, url) VALUES ($1, $2, $3) \
                 ON CONFLICT (campaign_id, position) DO NOTHING",
            )
            .bind(campaign_id)
            .bind(i as i64 + 1)
            .bind(url)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// A click on link `position` of message `message_id` (the code proved both): the
    /// target, or None when there is no such message or link. `counted` is false for a
    /// link-preview bot or a HEAD request, which are redirected and not counted. A message
    /// in its campaign's archive (docs/CAMPAIGNS.md, "Retention") is redirected and not
    /// counted either: an archived campaign's counters and export no longer change.
    pub async fn record_click(
        &self,
        message_id: MessageId,
        position: u8,
        now: i64,
        counted: bool,
    ) -> Result<Option<Click>, StoreError> {
        let position = i64::from(position);
        let found = sqlx::query(
            "SELECT m.campaign_id, cl.url FROM messages m \
             JOIN campaign_links cl ON cl.campaign_id = m.campaign_id AND cl.position = $2 \
             WHERE m.id = $1",
        )
        .bind(message_id)
        .bind(position)
        .fetch_optional(&self.read)
        .await?;
        let Some(found) = found else {
            return self.archived_click(message_id, position).await;
        };
        let campaign_id: CampaignId = found.try_get("campaign_id")?;
        let url: String = found.try_get("url")?;
        if !counted {
            return Ok(Some(Click {
                campaign_id,
                url,
                first_on_link: false,
                counted: false,
            }));
        }
        let mut tx = self.begin().await?;
        // The campaign first, as every writer of a campaign's messages locks it: shared, as
        // claims and commits do (a click writes only its own message and counters, which
        // they do not hold), so clicks during a send never hold the sending up; the archive
        // (exclusive) still waits for it.
        self.lock_campaign_as(&mut tx, campaign_id, CampaignLock::Share)
            .await?;
        // The message first: the archive may have moved it since it was read.
        let on_message: Option<i64> = sqlx::query_scalar(
            "UPDATE messages SET clicks = clicks + 1, first_clicked_at = COALESCE(first_clicked_at, $2) \
             WHERE id = $1 RETURNING clicks",
        )
        .bind(message_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(on_message) = on_message else {
            tx.rollback().await?;
            return Ok(Some(Click {
                campaign_id,
                url,
                first_on_link: false,
                counted: false,
            }));
        };
        let on_link: i64 = sqlx::query_scalar(
            "INSERT INTO message_clicks (message_id, position, first_at, last_at, clicks) \
             VALUES ($1, $2, $3, $3, 1) \
             ON CONFLICT (message_id, position) DO UPDATE SET clicks = message_clicks.clicks + 1, last_at = $3 \
             RETURNING clicks",
        )
        .bind(message_id)
        .bind(position)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let first_on_link = on_link == 1;
        sqlx::query(
            "UPDATE campaign_links SET clicks = clicks + 1, clicked = clicked + $3 \
             WHERE campaign_id = $1 AND position = $2",
        )
        .bind(campaign_id)
        .bind(position)
        .bind(i64::from(first_on_link))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE campaigns SET clicks = clicks + 1, clicked = clicked + $2 WHERE id = $1",
        )
        .bind(campaign_id)
        .bind(i64::from(on_message == 1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Click {
            campaign_id,
            url,
            first_on_link,
            counted: true,
        }))
    }

    /// A click on a message in its campaign's archive: redirected, not counted.
    async fn archived_click(
        &self,
        message_id: MessageId,
        position: i64,
    ) -> Result<Option<Click>, StoreError> {
        let Some((campaign_id, _, _)) = self.archived_message(message_id).await? else {
            return Ok(None);
        };
        let url: Option<String> = sqlx::query_scalar(
            "SELECT url FROM campaign_links WHERE campaign_id = $1 AND position = $2",
        )
        .bind(campaign_id)
        .bind(position)
        .fetch_optional(&self.read)
        .await?;
        Ok(url.map(|url| Click {
            campaign_id,
            url,
            first_on_link: false,
            counted: false,
        }))
    }

    /// The tracked links of the organisation's campaign, in position order, with their
    /// counts; empty before it starts or when its template has none.
    pub async fn campaign_links(
        &self,
        org_id: OrgId,
        campaign_id: CampaignId,
    ) -> Result<Vec<CampaignLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT cl.position, cl.url, cl.clicks, cl.clicked FROM campaign_links cl \
             JOIN campaigns c ON c.id = cl.campaign_id \
             WHERE cl.campaign_id = $1 AND c.org_id = $2 ORDER BY cl.position",
        )
        .bind(campaign_id)
        .bind(org_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CampaignLink {
                    position: r.try_get("position")?,
                    url: r.try_get("url")?,
                    clicks: r.try_get("clicks")?,
                    clicked: r.try_get("clicked")?,
                })
            })
            .collect()
    }
}
