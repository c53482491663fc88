//! A campaign's email (docs/EMAIL.md): its subject, HTML part, sender name and reply-to
//! address, each a template rendered for every recipient like the body. The body stays
//! the plain-text part; when it is empty and there is an HTML part, the text is derived
//! from each recipient's rendered HTML ([`text_from_html`]). Without this, an SMTP
//! campaign sends its body as plain text, its first line giving the subject (the
//! channel's `Subject:` convention), as before.

use crate::template::{ContactFields, MessageTemplate, Renderer, TemplateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest subject template, in characters (RFC 5322 lines stop at 998).
pub const MAX_SUBJECT: usize = 500;
/// Longest HTML template, in characters.
pub const MAX_HTML: usize = 200_000;
/// Longest sender-name template, in characters.
pub const MAX_FROM_NAME: usize = 200;
/// Longest reply-to template, in characters.
pub const MAX_REPLY_TO: usize = 320;
/// Width the derived plain text wraps at (RFC 5322 recommends lines under 78).
pub const TEXT_WIDTH: usize = 78;

/// What a campaign on an SMTP channel sends besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailContent {
    /// The subject line, a template (`Your order {{ order_id }}`).
    #[schema(
        example = "Hello {{ name or \"there\" }}, our sale starts today",
        min_length = 1,
        max_length = 500
    )]
    pub subject: String,
    /// The HTML part, a template whose printed values are HTML-escaped. With it the email
    /// is multipart/alternative: this and the plain text (the campaign's body, or, when
    /// the body is empty, text derived from this HTML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        example = "<h1>Hello {{ name }}</h1><p><a href=\"{{ link('https://example.com/sale') }}\">See the sale</a></p>",
        max_length = 200000
    )]
    pub html: Option<String>,
    /// The sender's display name, a template; the address stays the channel's `from`.
    /// Absent: the channel's own name part, if its `from` has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "Ana at Example Shop", max_length = 200)]
    pub from_name: Option<String>,
    /// Where replies go (`Reply-To`), a template that must render to one email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "support@example.com", max_length = 320)]
    pub reply_to: Option<String>,
}

/// A field of [`EmailContent`] that breaks a rule: the field (as the API names it,
/// `email.subject`), the rule, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailFieldError {
    pub field: &'static str,
    pub rule: &'static str,
    pub message: String,
}

impl std::fmt::Display for EmailFieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn field_error(
    field: &'static str,
    rule: &'static str,
    message: impl Into<String>,
) -> EmailFieldError {
    EmailFieldError {
        field,
        rule,
        message: message.into(),
    }
}

/// The one-line fields a header carries.
fn check_line(field: &'static str, value: &str, max: usize) -> Result<(), EmailFieldError> {
    if value.chars().count() > max {
        return Err(field_error(
            field,
            "max_length",
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(field_error(
            field,
            "format",
            "must be one line, without control characters",
        ));
    }
    Ok(())
}

impl EmailContent {
    /// Checks every field and compiles its templates; the error names the field.
    pub fn compile(&self) -> Result<EmailTemplates, EmailFieldError> {
        if self.subject.trim().is_empty() {
            return Err(field_error(
                "email.subject",
                "required",
                "must not be empty: give the subject line, e.g. \"Our sale starts today\"",
            ));
        }
        check_line("email.subject", &self.subject, MAX_SUBJECT)?;
        if let Some(name) = &self.from_name {
            check_line("email.from_name", name, MAX_FROM_NAME)?;
        }
        if let Some(reply_to) = &self.reply_to {
            check_line("email.reply_to", reply_to, MAX_REPLY_TO)?;
        }
        if let Some(html) = &self.html {
            if html.chars().count() > MAX_HTML {
                return Err(field_error(
                    "email.html",
                    "max_length",
                    format!("must be at most {MAX_HTML} characters"),
                ));
            }
            if html
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
            {
                return Err(field_error(
                    "email.html",
                    "format",
                    "must not contain control characters other than line breaks and tabs",
                ));
            }
        }
        let text = |field: &'static str, source: &str| {
            MessageTemplate::compile(source)
                .map_err(|e| field_error(field, e.rule("template"), e.to_string()))
        };
        let templates = EmailTemplates {
            subject: text("email.subject", &self.subject)?,
            html: match &self.html {
                Some(html) if !html.trim().is_empty() => {
                    Some(MessageTemplate::compile_html(html).map_err(|e| {
                        field_error("email.html", e.rule("template"), e.to_string())
                    })?)
                }
                _ => None,
            },
            from_name: self
                .from_name
                .as_deref()
                .filter(|n| !n.trim().is_empty())
                .map(|n| text("email.from_name", n))
                .transpose()?,
            reply_to: self
                .reply_to
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .map(|r| text("email.reply_to", r))
                .transpose()?,
        };
        // A reply-to without template syntax is checked now, not at every send.
        if let Some(reply_to) = &self.reply_to
            && templates.reply_to.is_some()
            && !reply_to.contains("{{")
            && !reply_to.contains("{%")
        {
            check_reply_to(reply_to).map_err(|m| field_error("email.reply_to", "format", m))?;
        }
        Ok(templates)
    }

    /// Every rule of a campaign's email parts, for a campaign on `channel` (its name and
    /// kind) sending to a list with `known_attributes`: only an SMTP channel sends them;
    /// each part compiles, uses only the list's fields and stays within the render limits
    /// (a trial render with placeholders: run it on the render pool); the body's and the
    /// HTML's tracked links are at most [`crate::tracked_links::MAX_LINKS`] together and
    /// can be signed on this server. The API and the CLI both call this.
    pub fn check_for(
        &self,
        channel: (&str, &str),
        known_attributes: &std::collections::BTreeSet<String>,
        list_name: &str,
        body_links: &[String],
        signing: (Option<&str>, Option<&str>),
    ) -> Result<EmailTemplates, EmailFieldError> {
        let (channel_name, channel_kind) = channel;
        if channel_kind != crate::channel_kind::smtp::NAME {
            return Err(field_error(
                "email",
                "channel_kind",
                format!(
                    "channel `{channel_name}` is a {channel_kind} channel: only an smtp channel sends an email's subject, HTML and reply-to; leave email out or pick an smtp channel"
                ),
            ));
        }
        let templates = self.compile()?;
        for (field, template) in templates.parts() {
            template
                .check_variables(known_attributes, list_name)
                .map_err(|e| field_error(field, "unknown_variable", e.to_string()))?;
        }
        let links = link_targets(body_links, templates.html_links());
        if links.len() > crate::tracked_links::MAX_LINKS {
            return Err(field_error(
                "email.html",
                "link_tracking",
                format!(
                    "the body and the HTML have {} different link() URLs together, more than {}: link one landing page that lists the rest",
                    links.len(),
                    crate::tracked_links::MAX_LINKS
                ),
            ));
        }
        crate::tracked_links::check_trackable(templates.html_links(), signing.0, signing.1)
            .map_err(|e| field_error("email.html", "link_tracking", e))?;
        for (field, template) in templates.parts() {
            template
                .check_limits()
                .map_err(|e| field_error(field, e.rule("render"), e.to_string()))?;
        }
        // The text derived from the HTML, once with placeholders: markup the converter
        // cannot take is refused now, not at every recipient.
        if let Some(html) = &templates.html
            && let Ok(rendered) = html.render_placeholder()
        {
            text_from_html(&rendered).map_err(|e| field_error("email.html", "render", e))?;
        }
        Ok(templates)
    }

    /// Whether the plain text is derived from the HTML: an HTML part and an empty body.
    pub fn derives_text(&self, body: &str) -> bool {
        self.html.as_deref().is_some_and(|h| !h.trim().is_empty()) && body.trim().is_empty()
    }
}

/// A rendered reply-to must be one plain address (`local@domain`).
pub fn check_reply_to(value: &str) -> Result<(), String> {
    match crate::address::Address::parse(value.trim()) {
        Ok(crate::address::Address::Email(_)) => Ok(()),
        _ => Err(format!(
            "`{value}` is not an email address: give one like support@example.com"
        )),
    }
}

/// The compiled templates of an [`EmailContent`].
#[derive(Debug)]
pub struct EmailTemplates {
    pub subject: MessageTemplate,
    pub html: Option<MessageTemplate>,
    pub from_name: Option<MessageTemplate>,
    pub reply_to: Option<MessageTemplate>,
}

/// One recipient's email parts (the plain text is the message's body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub html: Option<String>,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
}

/// Renderers for many recipients, built once per batch like the body's.
pub struct EmailRenderers<'a> {
    subject: Renderer<'a>,
    html: Option<Renderer<'a>>,
    from_name: Option<Renderer<'a>>,
    reply_to: Option<Renderer<'a>>,
}

/// Folds a rendered header value to one line: line breaks and runs of white space become
/// one space (a template's `{% if %}` leaves them), so no value can add a header.
fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl EmailTemplates {
    /// Each compiled part with the field that holds it (`email.subject`, …).
    pub fn parts(&self) -> Vec<(&'static str, &MessageTemplate)> {
        let mut parts = vec![("email.subject", &self.subject)];
        if let Some(h) = &self.html {
            parts.push(("email.html", h));
        }
        if let Some(n) = &self.from_name {
            parts.push(("email.from_name", n));
        }
        if let Some(r) = &self.reply_to {
            parts.push(("email.reply_to", r));
        }
        parts
    }

    /// Every variable of the parts and of `body` as its own name in capitals, the stand-in
    /// contact of a preview without one (as `MessageTemplate::render_placeholder`).
    pub fn placeholder_attributes(
        &self,
        body: &MessageTemplate,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut attributes = serde_json::Map::new();
        for template in self.parts().into_iter().map(|(_, t)| t).chain([body]) {
            for v in template.variables() {
                if !crate::template::BUILTIN_VARIABLES.contains(&v.as_str()) {
                    let shown = v.to_uppercase();
                    attributes.insert(v, serde_json::Value::String(shown));
                }
            }
        }
        attributes
    }

    /// The targets of the HTML part's `link("…")` calls.
    pub fn html_links(&self) -> &[String] {
        self.html.as_ref().map_or(&[], |h| h.links())
    }

    pub fn renderers(&self) -> Result<EmailRenderers<'_>, TemplateError> {
        Ok(EmailRenderers {
            subject: self.subject.renderer()?,
            html: self.html.as_ref().map(|t| t.renderer()).transpose()?,
            from_name: self.from_name.as_ref().map(|t| t.renderer()).transpose()?,
            reply_to: self.reply_to.as_ref().map(|t| t.renderer()).transpose()?,
        })
    }
}

impl EmailRenderers<'_> {
    /// One recipient's parts; the error names the part and what it lacks.
    pub fn render(
        &self,
        contact: &ContactFields<'_>,
        links: Option<&BTreeMap<String, String>>,
    ) -> Result<RenderedEmail, String> {
        let subject = one_line(
            &self
                .subject
                .render(contact)
                .map_err(|e| format!("email subject: {e}"))?,
        );
        if subject.is_empty() {
            return Err("email subject: renders empty for this contact".to_string());
        }
        let html = match &self.html {
            Some(r) => Some(
                r.render_linked(contact, links)
                    .map_err(|e| format!("email HTML: {e}"))?,
            ),
            None => None,
        };
        let from_name = match &self.from_name {
            Some(r) => Some(one_line(
                &r.render(contact)
                    .map_err(|e| format!("email from name: {e}"))?,
            ))
            .filter(|n| !n.is_empty()),
            None => None,
        };
        let reply_to = match &self.reply_to {
            Some(r) => {
                let value = one_line(
                    &r.render(contact)
                        .map_err(|e| format!("email reply-to: {e}"))?,
                );
                if value.is_empty() {
                    None
                } else {
                    check_reply_to(&value).map_err(|e| format!("email reply-to: {e}"))?;
                    Some(value)
                }
            }
            None => None,
        };
        Ok(RenderedEmail {
            subject,
            html,
            from_name,
            reply_to,
        })
    }
}

/// The plain-text alternative of an HTML part: paragraphs, lists and headings as text,
/// each link's URL in a numbered footnote, wrapped at [`TEXT_WIDTH`] (html2text, on
/// html5ever: the parser browsers' rules are written for). A conversion that panics (a
/// defect of the converter on some odd markup) is an error naming the part, so the one
/// message fails with the reason instead of its whole batch being handed back forever.
pub fn text_from_html(html: &str) -> Result<String, String> {
    std::panic::catch_unwind(|| convert(html))
        .map_err(|_| "email HTML: its plain-text alternative could not be derived from this HTML: give the campaign a body (the plain text) or simplify the markup".to_string())
}

fn convert(html: &str) -> String {
    match html2text::config::plain_no_decorate()
        .link_footnotes(true)
        .no_table_borders()
        .string_from_read(html.as_bytes(), TEXT_WIDTH)
    {
        Ok(text) => text.trim_end().to_string() + "\n",
        // Only a width too narrow for the content fails; fall back to no wrapping.
        Err(_) => html2text::config::plain_no_decorate()
            .link_footnotes(true)
            .no_table_borders()
            .allow_width_overflow()
            .string_from_read(html.as_bytes(), TEXT_WIDTH)
            .unwrap_or_default(),
    }
}

/// The targets of a campaign's tracked links, in the order their positions follow: the
/// body's first (so a body's codes do not depend on its HTML), then the HTML part's
/// others.
pub fn link_targets(body: &[String], html: &[String]) -> Vec<String> {
    let mut targets = body.to_vec();
    for t in html {
        if !targets.contains(t) {
            targets.push(t.clone());
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> EmailContent {
        EmailContent {
            subject: "Hi {{ name }}".into(),
            html: Some("<p>Hello <b>{{ name }}</b> &amp; welcome</p><a href=\"{{ link('https://example.com/a?x=1&y=2') }}\">Offer</a>".into()),
            from_name: Some("{{ city }} shop".into()),
            reply_to: Some("help@example.com".into()),
        }
    }

    #[test]
    fn renders_each_part_escaping_the_html_only() {
        let t = content().compile().unwrap();
        let mut attributes = serde_json::Map::new();
        attributes.insert("city".into(), "Porto\n& co".into());
        let contact = ContactFields {
            address: "a@example.org",
            name: Some("Tom & <Jerry>"),
            attributes: &attributes,
        };
        let r = t.renderers().unwrap();
        let links: BTreeMap<String, String> = [(
            "https://example.com/a?x=1&y=2".to_string(),
            "https://h.test/l/abc&d".to_string(),
        )]
        .into();
        let e = r.render(&contact, Some(&links)).unwrap();
        assert_eq!(e.subject, "Hi Tom & <Jerry>");
        let html = e.html.unwrap();
        assert!(html.contains("<b>Tom &amp; &lt;Jerry&gt;</b>"), "{html}");
        assert!(
            html.contains("href=\"https://h.test/l/abc&amp;d\""),
            "{html}"
        );
        // A line break in a value cannot start a header.
        assert_eq!(e.from_name.as_deref(), Some("Porto & co shop"));
        assert_eq!(e.reply_to.as_deref(), Some("help@example.com"));
    }

    #[test]
    fn each_field_is_checked_by_name() {
        let err = |c: EmailContent| c.compile().unwrap_err();
        assert_eq!(
            err(EmailContent {
                subject: " ".into(),
                ..content()
            })
            .field,
            "email.subject"
        );
        assert_eq!(
            err(EmailContent {
                subject: "a\nb".into(),
                ..content()
            })
            .rule,
            "format"
        );
        assert_eq!(
            err(EmailContent {
                html: Some("{{ oops".into()),
                ..content()
            })
            .field,
            "email.html"
        );
        assert_eq!(
            err(EmailContent {
                reply_to: Some("not an address".into()),
                ..content()
            })
            .field,
            "email.reply_to"
        );
        assert_eq!(
            err(EmailContent {
                from_name: Some("x".repeat(MAX_FROM_NAME + 1)),
                ..content()
            })
            .rule,
            "max_length"
        );
        // A templated reply-to is checked per recipient.
        let t = EmailContent {
            reply_to: Some("{{ attributes.owner }}".into()),
            ..content()
        }
        .compile()
        .unwrap();
        let mut attributes = serde_json::Map::new();
        attributes.insert("owner".into(), "nobody".into());
        attributes.insert("city".into(), "X".into());
        let contact = ContactFields {
            address: "a@example.org",
            name: None,
            attributes: &attributes,
        };
        let e = t.renderers().unwrap().render(&contact, None).unwrap_err();
        assert!(e.starts_with("email reply-to:"), "{e}");
    }

    #[test]
    fn text_is_derived_from_html() {
        let text = text_from_html(
            "<h1>Sale</h1><p>Hello <b>Ann</b>,</p><ul><li>one</li><li>two</li></ul><p><a href=\"https://example.com/x\">See it</a></p><script>alert(1)</script>",
        )
        .unwrap();
        assert!(text.contains("Sale"), "{text}");
        assert!(text.contains("Hello Ann,"), "{text}");
        assert!(text.contains("one") && text.contains("two"), "{text}");
        assert!(text.contains("https://example.com/x"), "{text}");
        assert!(!text.contains("alert"), "{text}");
        assert!(!text.contains('<'), "{text}");
        assert!(!text.contains("**"), "no emphasis marks: {text}");
    }

    #[test]
    fn link_positions_keep_the_body_first() {
        let body = vec!["https://a".to_string(), "https://b".to_string()];
        let html = vec!["https://c".to_string(), "https://a".to_string()];
        assert_eq!(
            link_targets(&body, &html),
            ["https://a", "https://b", "https://c"]
        );
    }
}
