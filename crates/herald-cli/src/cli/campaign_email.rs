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
    #[arg(long, value_name = "FILE")]
    html_file: Option<std::path::PathBuf>,
    /// smtp channels: the sender's display name, a template; the address stays the
    /// channel's --from.
    #[arg(long, value_name = "TEMPLATE")]
    from_name: Option<String>,
    /// smtp channels: where replies go (Reply-To), an address or a template that renders
    /// one.
    #[arg(long, value_name = "ADDRESS")]
    reply_to: Option<String>,
}

impl EmailFlags {
    /// Whether a part other than the subject is given.
    fn any_part(&self) -> bool {
        self.html_file.is_some() || self.from_name.is_some() || self.reply_to.is_some()
    }

    /// `campaign create`: the email parts the flags give, the HTML read from its file;
    /// None without any of them.
    pub fn email(&self) -> Result<Option<EmailContent>, CliError> {
        self.edited(None)
    }

    /// `campaign edit`: the flags given over the campaign's `current` parts (a part not
    /// given stays; an empty --from-name or --reply-to removes it); None when no email
    /// flag is given.
    pub fn edited(&self, current: Option<&EmailContent>) -> Result<Option<EmailContent>, CliError> {
        if self.subject.is_none() && !self.any_part() {
            return Ok(None);
        }
        let subject = match (&self.subject, current) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => c.subject.clone(),
            (None, None) => {
                return Err(CliError::from(
                    "--subject is needed with --html-file, --from-name or --reply-to: the campaign has no email parts yet",
                ));
            }
        };
        let html = match &self.html_file {
            Some(path) => Some(read_html(path)?),
            None => current.and_then(|c| c.html.clone()),
        };
        let text = |given: &Option<String>, kept: Option<&String>| match given {
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(v.clone()),
            None => kept.cloned(),
        };
        Ok(Some(EmailContent {
            subject,
            html,
            from_name: text(&self.from_name, current.and_then(|c| c.from_name.as_ref())),
            reply_to: text(&self.reply_to, current.and_then(|c| c.reply_to.as_ref())),
        }))
    }
}

/// An HTML part from its file, bounded before it is read.
fn read_html(path: &std::path::Path) -> Result<String, CliError> {
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
    std::fs::read_to_string(path).map_err(|e| {
        CliError::from(format!(
            "--html-file {}: {e} (the file must be UTF-8 text)",
            path.display()
        ))
    })
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
