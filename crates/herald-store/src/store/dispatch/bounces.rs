//! Email bounces, complaints and deliveries reported by a provider's webhook (Amazon SES,
//! Postmark, SendGrid; docs/EMAIL.md), applied within the channel whose path the webhook
//! came to: a message is found by its provider id (the Message-ID Herald gave the email)
//! among that channel's campaigns only, and an address is suppressed in that channel's
//! organisation only.

use crate::address::Address;
use crate::domain::MessageStatus;
use crate::email_feedback::{EmailFeedback, FeedbackKind};
use crate::ids::{ChannelId, OrgId};
use crate::store::{OptSource, Receipt, Store, StoreError};

/// What one webhook's feedback changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackReport {
    /// Receipts applied (delivered; undelivered for a hard bounce or a drop).
    pub applied: usize,
    /// Receipts kept for a message whose provider id is not recorded yet.
    pub kept: usize,
    /// Soft bounces noted on their message.
    pub noted: usize,
    /// Addresses newly suppressed (hard bounces, complaints).
    pub suppressed: usize,
    /// Items that named no message and no usable address.
    pub ignored: usize,
}

impl FeedbackReport {
    /// One line for the kept webhook event's outcome.
    pub fn outcome(&self) -> String {
        format!(
            "applied {}, kept {}, soft bounces noted {}, suppressed {}, ignored {}",
            self.applied, self.kept, self.noted, self.suppressed, self.ignored
        )
    }
}

impl Store {
    /// Applies a verified webhook's feedback for channel `channel_id` of organisation
    /// `org_id`: a delivery moves the message to delivered; a hard bounce or a drop to
    /// undelivered with the provider's reason (receipts only ever move a message forwards,
    /// docs/DESIGN.md invariant 7); a soft bounce is noted as the message's last error and
    /// changes no status; a hard bounce or a complaint suppresses the address in the
    /// organisation (`contact.unsubscribed`, source `bounce` or `complaint`).
    pub async fn apply_email_feedback(
        &self,
        org_id: OrgId,
        channel_id: ChannelId,
        feedback: &[EmailFeedback],
        now: i64,
    ) -> Result<FeedbackReport, StoreError> {
        let mut report = FeedbackReport::default();
        let mut receipts = Vec::new();
        for f in feedback {
            match (&f.kind, &f.message_id) {
                (FeedbackKind::Delivered, Some(id)) => receipts.push(Receipt {
                    channel_id,
                    provider_id: id.clone(),
                    status: MessageStatus::Delivered,
                    error: None,
                }),
                (FeedbackKind::HardBounce | FeedbackKind::Dropped, Some(id)) => {
                    receipts.push(Receipt {
                        channel_id,
                        provider_id: id.clone(),
                        status: MessageStatus::Undelivered,
                        error: Some(f.detail.clone()),
                    })
                }
                (FeedbackKind::SoftBounce, Some(id)) => {
                    // Only a message still reported sent takes the note: a delivered or
                    // final status keeps its own reason. (A soft bounce for a provider id
                    // not recorded yet is not kept: it changes no status.) The channel is
                    // checked on the rows the provider id finds, as receipts.rs does.
                    let noted = sqlx::query(
                        "UPDATE messages SET last_error = $1, updated_at = $2 \
                         WHERE provider_id = $3 AND status = 'sent' \
                         AND (SELECT c.channel_id = $4 FROM campaigns c WHERE c.id = messages.campaign_id)",
                    )
                    .bind(&f.detail)
                    .bind(now)
                    .bind(id)
                    .bind(channel_id)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                    report.noted += noted as usize;
                }
                _ => {}
            }
            let suppress = matches!(f.kind, FeedbackKind::HardBounce | FeedbackKind::Complaint);
            let address = if suppress {
                self.feedback_address(channel_id, f).await?
            } else {
                None
            };
            match (suppress, &address) {
                (true, Some(address)) => {
                    let (source, reason) = match f.kind {
                        FeedbackKind::Complaint => {
                            ("complaint", format!("complained: {}", f.detail))
                        }
                        _ => ("bounce", format!("bounced: {}", f.detail)),
                    };
                    let via = OptSource::new(source, Some(channel_id), None);
                    if self.suppress(org_id, address, &reason, &via).await? {
                        report.suppressed += 1;
                    }
                }
                (true, None) if f.message_id.is_none() => report.ignored += 1,
                (false, _) if f.message_id.is_none() => report.ignored += 1,
                _ => {}
            }
        }
        if !receipts.is_empty() {
            let applied = self.apply_receipts(&receipts, now).await?;
            report.applied += applied.applied;
            report.kept += applied.kept;
        }
        Ok(report)
    }
}

impl Store {
    /// The address a bounce or complaint suppresses: the one Herald sent the message to,
    /// when the report names a message of this channel (a provider may change the case of
    /// the local part, which the suppression list compares exactly); else the reported
    /// recipient, when it is an email address.
    async fn feedback_address(
        &self,
        channel_id: ChannelId,
        f: &EmailFeedback,
    ) -> Result<Option<String>, StoreError> {
        if let Some(id) = &f.message_id {
            // One probe of the provider-id index, the channel checked on what it finds: as a
            // join, PostgreSQL ANDed that index with every message of the channel's campaign
            // on a table not analysed yet (dispatch/receipts.rs, scripts/explain-plans).
            let sent_to: Option<String> = sqlx::query_scalar(
                "SELECT m.address FROM messages m WHERE m.provider_id = $1 \
                 AND (SELECT c.channel_id = $2 FROM campaigns c WHERE c.id = m.campaign_id) LIMIT 1",
            )
            .bind(id)
            .bind(channel_id)
            .fetch_optional(&self.read)
            .await?;
            if sent_to.is_some() {
                return Ok(sent_to);
            }
        }
        Ok(match Address::parse(f.recipient.trim()) {
            Ok(Address::Email(address)) => Some(address),
            _ => None,
        })
    }
}
