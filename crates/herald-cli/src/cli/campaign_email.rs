//! `herald campaign create|edit` flags for a campaign's email parts (docs/EMAIL.md): the
//! subject, the HTML part (from a file), the sender name and the reply-to address.

use super::CliError;
use crate::config::Settings;
use crate::email_content::EmailContent;
use crate::store::{ChannelInfo, Store};
use clap::Args;

/// Email parts, for a campaign on an smtp channel.
#[derive(Debug, Clone, Args)]
pub struct EmailFlags {
    /// smtp channels: the subject line, a template ("Your order {{ order_id }}"). With it
    /// the body is the plain-text part, not a `Subject:` line and the text.
    #[arg(long, value_name = "TEMPLATE")]
    subject: Option<String>,
    /// smtp channels: the HTML part, a template read from FILE (printed values are
    /// HTML-escaped). The email is then multipart/alternative; without --body its text is
    /// derived from each recipient's HTML.
    #[arg(long, value_name = "FILE", requires = "subject")]
    html_file: Option<std::path::PathBuf>,
    /// smtp channels: the sender's display name, a template; the address stays the
    /// channel's --from.
    #[arg(long, value_name = "TEMPLATE", requires = "subject")]
    from_name: Option<String>,
    /// smtp channels: where replies go (Reply-To), an address or a template that renders
    /// one.
    #[arg(long, value_name = "ADDRESS", requires = "subject")]
    reply_to: Option<String>,
}

impl EmailFlags {
    /// The email parts the flags give, the HTML read from its file; None without --subject.
    pub fn email(&self) -> Result<Option<EmailContent>, CliError> {
        let Some(subject) = &self.subject else {
            return Ok(None);
        };
        let html = match &self.html_file {
            Some(path) => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| CliError::from(format!("--html-file {}: {e}", path.display())))?;
                // Characters are checked after reading; bytes bound the read itself.
                if meta.len() > (crate::email_content::MAX_HTML * 4) as u64 {
                    return Err(CliError::from(format!(
                        "--html-file {}: {} bytes is more than an HTML part may hold ({} characters)",
                        path.display(),
                        meta.len(),
                        crate::email_content::MAX_HTML
                    )));
                }
                Some(std::fs::read_to_string(path).map_err(|e| {
                    CliError::from(format!(
                        "--html-file {}: {e} (the file must be UTF-8 text)",
                        path.display()
                    ))
                })?)
            }
            None => None,
        };
        Ok(Some(EmailContent {
            subject: subject.clone(),
            html,
            from_name: self.from_name.clone(),
            reply_to: self.reply_to.clone(),
        }))
    }
}

/// The API's check of a campaign's email parts (`EmailContent::check_for`), with the
/// CLI's error naming the flag.
pub async fn check_email(
    store: &Store,
    settings: &Settings,
    email: &EmailContent,
    channel: &ChannelInfo,
    list: (crate::ids::ListId, &str),
    body_links: &[String],
) -> Result<(), CliError> {
    let known = store.list_attribute_keys(list.0).await?;
    email
        .check_for(
            (&channel.name, &channel.kind),
            &known,
            list.1,
            body_links,
            (
                settings.public_url.as_deref(),
                settings.secret_key.as_deref(),
            ),
        )
        .map(|_| ())
        .map_err(|e| {
            let flag = match e.field {
                "email.subject" => "--subject",
                "email.html" => "--html-file",
                "email.from_name" => "--from-name",
                "email.reply_to" => "--reply-to",
                _ => "--subject",
            };
            CliError::from(format!("{flag}: {}", e.message))
        })
}

/// The body a campaign is created or edited with: `--body`, or, with an HTML part and no
/// `--body`, empty (its text derived from the HTML).
pub fn body_or_derived(
    body: Option<&str>,
    email: Option<&EmailContent>,
) -> Result<String, CliError> {
    match body {
        Some(b) if !b.trim().is_empty() => Ok(b.to_string()),
        _ if email.is_some_and(|e| e.derives_text("")) => Ok(String::new()),
        Some(_) => Err(CliError::from(
            "--body must not be empty: give the message, or --subject and --html-file for an email whose text comes from its HTML",
        )),
        None => Err(CliError::from(
            "--body is needed: give the message, or --subject and --html-file for an email whose text comes from its HTML",
        )),
    }
}
