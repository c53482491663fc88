//! What a draft or scheduled campaign will send, before it starts (docs/CAMPAIGNS.md): the
//! recipients and who the start would skip and why, every recipient's message rendered
//! with its SMS segments, who needs UCS-2 and which characters force it (with a GSM-7
//! replacement when one exists), the cost at the channel's prices, and how long it takes
//! at the channel's rate.
//!
//! The audience is read in keyset pages of [`PAGE_ROWS`] (`Store::audience_page`, the
//! start's own skip rule) and each page is rendered on the blocking pool
//! (`template::render_off_thread`), so a million recipients take the memory of one page
//! and never hold an HTTP or engine thread.

use crate::channel_kind::ChannelKind;
use crate::email_content::EmailTemplates;
use crate::ids::ContactId;
use crate::pricing::Micros;
use crate::segments::{Encoding, gsm7_replacement, sms_segments, ucs2_characters};
use crate::store::audience::{AudienceMember, SkipReason};
use crate::store::{Campaign, ChannelInfo, Store, StoreError};
use crate::template::{ContactFields, MessageTemplate, TemplateError, render_off_thread};
use crate::tracked_links::LinkSigner;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Recipients read and rendered per page.
pub const PAGE_ROWS: i64 = 1000;
/// Characters that force UCS-2 listed in an estimate, the most frequent first.
const MAX_UCS2_CHARACTERS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the campaign's template does not compile: {0}")]
    Template(#[from] TemplateError),
}

/// A character that forces UCS-2, how many recipients' messages have it, and what GSM-7
/// could say instead.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ucs2Character {
    /// The character itself.
    #[schema(example = "’")]
    pub character: String,
    /// Its code point, e.g. `U+2019`.
    #[schema(example = "U+2019")]
    pub code_point: String,
    /// Recipients whose message contains it.
    pub recipients: i64,
    /// A GSM-7 replacement, when a common one exists (`'` for `’`); null for emoji and
    /// other scripts.
    pub replacement: Option<String>,
}

/// The estimated cost.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CostEstimate {
    /// ISO 4217 code of the channel's prices.
    #[schema(example = "USD")]
    pub currency: String,
    /// The total for the recipients with a price, as a decimal string (exact).
    #[schema(example = "12.3456")]
    pub total: String,
    /// Recipients whose address has no price (no prefix matches and no default price):
    /// not in the total.
    pub unpriced_recipients: i64,
}

/// What a campaign will send, counted before it starts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Estimate {
    /// Contacts of the campaign's list.
    pub audience: i64,
    /// Messages the start would queue: the audience minus the skipped.
    pub recipients: i64,
    /// Recipients the start would skip, by reason: `unsubscribed`, `suppressed`,
    /// `unusable_address` (not an address the channel delivers to).
    #[schema(value_type = BTreeMap<String, i64>)]
    pub skipped: BTreeMap<&'static str, i64>,
    /// Messages rendered (one per recipient whose template rendered).
    pub rendered: i64,
    /// Recipients whose message cannot be rendered (a missing field, a template limit):
    /// the sender would fail them.
    pub render_failures: i64,
    /// The first such failure, as the sender would record it.
    pub first_render_failure: Option<String>,
    /// Whether the channel bills and rate-limits by SMS segment (else by message).
    pub counts_segments: bool,
    /// Billing units: SMS segments on an SMS channel, messages otherwise.
    pub units: i64,
    /// Recipients by how many segments their message takes (SMS channels; `"1"`, `"2"`, …).
    pub recipients_by_segments: BTreeMap<String, i64>,
    /// Recipients whose message must be sent as UCS-2 (70 characters per segment instead
    /// of 160).
    pub ucs2_recipients: i64,
    /// The characters that force UCS-2, the most frequent first (at most 50).
    pub ucs2_characters: Vec<Ucs2Character>,
    /// The template's tracked links (`link("…")`): each is counted as a short link of
    /// `tracked_link_length` characters, the length every recipient's has.
    pub tracked_links: i64,
    /// Characters of every tracked link (`public_url` + `/l/` + 16); null when the
    /// template has none, or Herald cannot track links (then the targets are counted as
    /// written).
    pub tracked_link_length: Option<i64>,
    /// The cost at the channel's prices; null when the channel has none.
    pub cost: Option<CostEstimate>,
    /// The channel's rate limit (units per second); null: none.
    pub rate_per_sec: Option<f64>,
    /// Seconds to send every unit at that rate; null without a rate limit (then the
    /// provider's latency and `concurrency` bound it, as `herald bench` measures).
    pub duration_secs: Option<f64>,
}

/// One page's share of the estimate.
#[derive(Default)]
struct PageTally {
    recipients: i64,
    skipped: HashMap<SkipReason, i64>,
    rendered: i64,
    render_failures: i64,
    first_render_failure: Option<String>,
    units: i64,
    by_segments: BTreeMap<u32, i64>,
    ucs2_recipients: i64,
    ucs2: HashMap<char, i64>,
    priced_micros: i128,
    unpriced: i64,
}

fn tally_page(
    template: &MessageTemplate,
    email: Option<&Result<EmailTemplates, String>>,
    links: Option<&BTreeMap<String, String>>,
    members: &[AudienceMember],
    counts_segments: bool,
    pricing: Option<&crate::pricing::Pricing>,
) -> PageTally {
    let mut t = PageTally::default();
    let renderer = template.renderer();
    // The email parts render for each recipient too: a part the sender could not render
    // (a templated reply-to that is no address) fails that message.
    let email_renderer = email.map(|e| match e {
        Ok(t) => t.renderers().map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    });
    for m in members {
        if let Some(reason) = m.skip {
            *t.skipped.entry(reason).or_default() += 1;
            continue;
        }
        t.recipients += 1;
        let attributes = match serde_json::from_str::<serde_json::Value>(&m.attributes) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let fields = ContactFields {
            address: &m.address,
            name: m.name.as_deref(),
            attributes: &attributes,
        };
        let rendered = match &renderer {
            Ok(r) => r.render_linked(&fields, links),
            Err(e) => Err(e.clone()),
        };
        let email = match &email_renderer {
            Some(Ok(r)) => r.render(&fields, links).map(|_| ()),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(()),
        };
        let body = match (rendered.map_err(|e| e.to_string()), email) {
            (Ok(body), Ok(())) => body,
            (Err(e), _) | (_, Err(e)) => {
                t.render_failures += 1;
                if t.first_render_failure.is_none() {
                    t.first_render_failure = Some(format!("{}: {e}", m.contact_id));
                }
                continue;
            }
        };
        t.rendered += 1;
        let units = if counts_segments {
            let s = sms_segments(&body);
            *t.by_segments.entry(s.segments).or_default() += 1;
            if s.encoding == Encoding::Ucs2 {
                t.ucs2_recipients += 1;
                for c in ucs2_characters(&body) {
                    *t.ucs2.entry(c).or_default() += 1;
                }
            }
            i64::from(s.segments)
        } else {
            1
        };
        t.units += units;
        match pricing.and_then(|p| p.unit_price(&m.address)) {
            Some(Micros(price)) => t.priced_micros += i128::from(price) * i128::from(units),
            None => t.unpriced += 1,
        }
    }
    t
}

/// `micros` as a decimal string with up to six decimals (exact).
fn decimal(micros: i128) -> String {
    let whole = micros / 1_000_000;
    let frac = (micros % 1_000_000).unsigned_abs();
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

/// Estimates `campaign` (a draft or scheduled one of `channel`'s organisation) as its start
/// would create it now.
/// `signer` is Herald's (`tracked_links::LinkSigner`), when it can track links.
pub async fn estimate(
    store: &Store,
    campaign: &Campaign,
    channel: &ChannelInfo,
    signer: Option<&LinkSigner>,
) -> Result<Estimate, EstimateError> {
    let template = Arc::new(MessageTemplate::compile(&campaign.body)?);
    let email = Arc::new(
        campaign
            .email
            .as_ref()
            .map(|e| e.compile().map_err(|e| e.to_string())),
    );
    let targets = crate::email_content::link_targets(
        template.links(),
        match email.as_ref() {
            Some(Ok(e)) => e.html_links(),
            _ => &[],
        },
    );
    // Every recipient's links have one length, so a stand-in of that length counts exactly.
    let links = Arc::new(
        signer
            .filter(|_| !targets.is_empty())
            .map(|s| s.placeholder_links(&targets)),
    );
    let tracked_link_length = links
        .is_some()
        .then(|| signer.map(|s| s.placeholder_url().chars().count() as i64))
        .flatten();
    let kind = channel.kind.parse::<ChannelKind>().ok();
    let counts_segments = kind.is_some_and(|k| k.counts_sms_segments());
    let required = kind.and_then(|k| k.address_kind());
    let pricing = Arc::new(channel.pricing.clone());
    let mut total = PageTally::default();
    let mut audience = 0i64;
    let mut after = ContactId(0);
    loop {
        let page = store
            .audience_page(
                campaign.org_id,
                campaign.list_id,
                required,
                after,
                PAGE_ROWS,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = last.contact_id;
        let full = page.len() as i64 == PAGE_ROWS;
        audience += page.len() as i64;
        let (template, email, pricing, links) = (
            template.clone(),
            email.clone(),
            pricing.clone(),
            links.clone(),
        );
        let t = render_off_thread(move || {
            tally_page(
                &template,
                email.as_ref().as_ref(),
                links.as_ref().as_ref(),
                &page,
                counts_segments,
                pricing.as_ref().as_ref(),
            )
        })
        .await?;
        total.recipients += t.recipients;
        for (reason, n) in t.skipped {
            *total.skipped.entry(reason).or_default() += n;
        }
        total.rendered += t.rendered;
        total.render_failures += t.render_failures;
        if total.first_render_failure.is_none() {
            total.first_render_failure = t.first_render_failure;
        }
        total.units += t.units;
        for (segments, n) in t.by_segments {
            *total.by_segments.entry(segments).or_default() += n;
        }
        total.ucs2_recipients += t.ucs2_recipients;
        for (c, n) in t.ucs2 {
            *total.ucs2.entry(c).or_default() += n;
        }
        total.priced_micros += t.priced_micros;
        total.unpriced += t.unpriced;
        if !full {
            break;
        }
    }
    let mut ucs2: Vec<(char, i64)> = total.ucs2.into_iter().collect();
    ucs2.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ucs2.truncate(MAX_UCS2_CHARACTERS);
    let rate = channel.rate_per_sec.filter(|r| *r > 0.0);
    Ok(Estimate {
        audience,
        recipients: total.recipients,
        skipped: [
            SkipReason::Unsubscribed,
            SkipReason::Suppressed,
            SkipReason::UnusableAddress,
        ]
        .into_iter()
        .map(|r| (r.as_str(), total.skipped.get(&r).copied().unwrap_or(0)))
        .collect(),
        rendered: total.rendered,
        render_failures: total.render_failures,
        first_render_failure: total.first_render_failure,
        counts_segments,
        units: total.units,
        recipients_by_segments: total
            .by_segments
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect(),
        ucs2_recipients: total.ucs2_recipients,
        ucs2_characters: ucs2
            .into_iter()
            .map(|(c, n)| Ucs2Character {
                character: c.to_string(),
                code_point: format!("U+{:04X}", u32::from(c)),
                recipients: n,
                replacement: gsm7_replacement(c).map(str::to_string),
            })
            .collect(),
        tracked_links: targets.len() as i64,
        tracked_link_length,
        cost: channel.pricing.as_ref().map(|p| CostEstimate {
            currency: p.currency.clone(),
            total: decimal(total.priced_micros),
            unpriced_recipients: total.unpriced,
        }),
        rate_per_sec: rate,
        duration_secs: rate.map(|r| (total.units as f64 / r * 10.0).round() / 10.0),
    })
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn totals_print_exactly() {
        assert_eq!(decimal(0), "0");
        assert_eq!(decimal(7_900), "0.0079");
        assert_eq!(decimal(7_900 * 1_000_000), "7900");
        assert_eq!(decimal(12_345_678_901), "12345.678901");
    }
}
