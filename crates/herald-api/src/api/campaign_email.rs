//! A campaign's email parts (`email`: subject, HTML, sender name, reply-to) as the API
//! checks and previews them (docs/EMAIL.md). The parts are templates like the body; they
//! are checked at create and at every edit that changes them, the channel or the list.

use super::ApiState;
use super::problem::{ApiError, ApiResult};
use crate::email_content::{EmailContent, RenderedEmail};
use crate::ids::ListId;
use crate::store::ChannelInfo;
use crate::template::{ContactFields, MessageTemplate, render_off_thread};
use serde::Serialize;
use utoipa::ToSchema;

/// Checks a campaign's email parts against its channel and list
/// (`EmailContent::check_for`, on the render pool): 422 naming the field.
pub async fn check_email(
    state: &ApiState,
    email: &EmailContent,
    channel: &ChannelInfo,
    list_id: ListId,
    list_name: &str,
    body_links: &[String],
) -> ApiResult<()> {
    let known = state.store.list_attribute_keys(list_id).await?;
    let (email, channel_name, channel_kind, list_name, body_links) = (
        email.clone(),
        channel.name.clone(),
        channel.kind.clone(),
        list_name.to_string(),
        body_links.to_vec(),
    );
    let (public_url, secret_key) = (
        state.settings.public_url.clone(),
        state.settings.secret_key.clone(),
    );
    render_off_thread(move || {
        email
            .check_for(
                (&channel_name, &channel_kind),
                &known,
                &list_name,
                &body_links,
                (public_url.as_deref(), secret_key.as_deref()),
            )
            .map(|_| ())
    })
    .await
    .map_err(|e| ApiError::invalid("email", e.rule("render"), e.to_string()))?
    .map_err(|e| ApiError::invalid(e.field, e.rule, e.message))
}

/// An email as one recipient would get it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailPreview {
    #[schema(example = "Hello Ada, our sale starts today")]
    pub subject: String,
    /// The HTML part; the dashboard shows it in a sandboxed frame that runs no script.
    pub html: Option<String>,
    /// The plain-text part: the body, or the text derived from the HTML when the body is
    /// empty.
    pub text: String,
    /// The sender's display name; null: the channel's own.
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
}

/// Renders a campaign's email for one contact (or with placeholders) on the render pool.
/// The error names the part that failed.
pub async fn render_email(
    email: EmailContent,
    body: String,
    contact: Option<crate::store::ContactInput>,
) -> Result<EmailPreview, String> {
    render_off_thread(move || {
        let templates = email.compile().map_err(|e| e.to_string())?;
        let body_template = MessageTemplate::compile(&body).map_err(|e| e.to_string())?;
        let placeholder = templates.placeholder_attributes(&body_template);
        let (address, name, attributes) = match &contact {
            Some(c) => (c.address.as_str(), c.name.as_deref(), &c.attributes),
            None => ("ADDRESS", Some("NAME"), &placeholder),
        };
        let fields = ContactFields {
            address,
            name,
            attributes,
        };
        let RenderedEmail {
            subject,
            html,
            from_name,
            reply_to,
        } = templates
            .renderers()
            .map_err(|e| e.to_string())?
            .render(&fields, None)?;
        let text = if email.derives_text(&body) {
            html.as_deref()
                .map(crate::email_content::text_from_html)
                .transpose()?
                .unwrap_or_default()
        } else {
            body_template.render(&fields).map_err(|e| e.to_string())?
        };
        Ok(EmailPreview {
            subject,
            html,
            text,
            from_name,
            reply_to,
        })
    })
    .await
    .map_err(|e| e.to_string())?
}
