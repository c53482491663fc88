//! HTML from templates embedded in the binary (minijinja, HTML auto-escaping for every
//! `.html` template). A page is its own template rendered first, then wrapped in the layout.

use super::Ctx;
use super::flash::clear_flash;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::value::Value as JinjaValue;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// Every template, by name. The names end in `.html`, which turns auto-escaping on.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("campaigns.html", include_str!("templates/campaigns.html")),
    (
        "campaign_new.html",
        include_str!("templates/campaign_new.html"),
    ),
    ("campaign.html", include_str!("templates/campaign.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("estimate.html", include_str!("templates/estimate.html")),
    ("inbox.html", include_str!("templates/inbox.html")),
    (
        "inbox_thread.html",
        include_str!("templates/inbox_thread.html"),
    ),
    ("contacts.html", include_str!("templates/contacts.html")),
    ("lists.html", include_str!("templates/lists.html")),
    (
        "suppressions.html",
        include_str!("templates/suppressions.html"),
    ),
    ("channels.html", include_str!("templates/channels.html")),
    ("api_keys.html", include_str!("templates/api_keys.html")),
    ("users.html", include_str!("templates/users.html")),
    ("secret.html", include_str!("templates/secret.html")),
    ("system.html", include_str!("templates/system.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            minijinja::AutoEscape::Html
        } else {
            minijinja::AutoEscape::None
        }
    });
    env.add_filter("when", when);
    env.add_filter("label", label);
    env.add_filter("num", num);
    env.add_filter("rate", rate);
    env.add_filter("pct", pct);
    env.add_filter("urlq", urlq);
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "dashboard template does not compile");
        }
    }
    env
});

/// `2026-11-28T11:00:00.000Z` as `2026-11-28 11:00:00 UTC`; empty for none.
fn when(value: JinjaValue) -> String {
    let Some(text) = value.as_str() else {
        return String::new();
    };
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => text.to_string(),
    }
}

/// `in_flight` as `In flight`.
fn label(value: JinjaValue) -> String {
    let text = value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    super::client::capitalise(&text.replace('_', " "))
}

/// 12345 as `12,345`.
fn num(value: JinjaValue) -> String {
    let n = i64::try_from(value.clone()).unwrap_or(0);
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A rate per second as people read it: whole, with thousands separators, from 10 up
/// (`12,146`); to one decimal below (`2.5`, `0.4`), where a whole number would round a
/// slow rate-limited campaign to 0. The API keeps the exact figure.
fn rate(value: JinjaValue) -> String {
    let r = f64::try_from(value).unwrap_or(0.0);
    if !r.is_finite() || r <= 0.0 {
        return "0".into();
    }
    if r >= 10.0 {
        num(JinjaValue::from(r.round() as i64))
    } else {
        let tenths = (r * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            format!("{tenths:.0}")
        } else {
            format!("{tenths:.1}")
        }
    }
}

/// `part|pct(total)`: a whole percentage, 0 when the total is 0.
fn pct(part: JinjaValue, total: JinjaValue) -> i64 {
    let part = i64::try_from(part).unwrap_or(0);
    let total = i64::try_from(total).unwrap_or(0);
    if total <= 0 {
        0
    } else {
        (part * 100 / total).clamp(0, 100)
    }
}

/// A value percent-encoded for a URL path segment or a query value.
fn urlq(value: JinjaValue) -> String {
    let text = value.as_str().map(str::to_string).unwrap_or_default();
    super::client::percent_encode(&text)
}

/// A short fingerprint of the assets, so browsers fetch them again after an upgrade.
pub fn asset_version() -> &'static str {
    super::assets::version()
}

fn render(name: &str, context: &Value) -> Result<String, String> {
    let template = ENV.get_template(name).map_err(|e| e.to_string())?;
    template
        .render(JinjaValue::from(minijinja::value::Serde(context)))
        .map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })
}

fn merge(data: Value, extra: Value) -> Value {
    let mut map = match data {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            map.entry(k).or_insert(v);
        }
    }
    Value::Object(map)
}

/// What the layout needs to know about a page.
pub struct PageMeta<'a> {
    pub status: StatusCode,
    /// The navigation entry to mark as current.
    pub section: &'a str,
    pub title: &'a str,
}

/// A page for a signed-in user: `template` rendered with `data` (plus `csrf` and `me`),
/// inside the layout with the navigation and the flash message.
pub fn page(ctx: &Ctx, meta: PageMeta<'_>, template: &str, data: Value) -> Response {
    let s = &ctx.session;
    let me = json!({
        "email": s.email,
        "role": s.role.as_str(),
        "organisation": s.organisation,
        "can_edit": s.at_least(crate::domain::Role::Editor),
        "can_admin": s.at_least(crate::domain::Role::Admin),
        "is_owner": s.at_least(crate::domain::Role::Owner),
    });
    let common = json!({"csrf": s.csrf, "me": me, "here": ctx.here});
    let content = match render(template, &merge(data, common.clone())) {
        Ok(html) => html,
        Err(e) => return template_failed(template, &e),
    };
    // A flash message starting with `!` reports a failure.
    let (flash, flash_error) = match ctx.flash.as_deref() {
        Some(f) if f.starts_with('!') => (None, Some(&f[1..])),
        Some(f) => (Some(f), None),
        None => (None, None),
    };
    let layout = merge(
        json!({
            "title": meta.title,
            "section": meta.section,
            "flash": flash,
            "flash_error": flash_error,
            "asset": asset_version(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
        common,
    );
    let html = match render_layout(&layout, content) {
        Ok(html) => html,
        Err(e) => return template_failed("layout.html", &e),
    };
    let mut response = (meta.status, Html(html)).into_response();
    if ctx.flash.is_some() {
        clear_flash(response.headers_mut(), ctx.secure);
    }
    response
}

/// A page for someone not signed in (sign-in, errors before a session is known).
pub fn public_page(status: StatusCode, title: &str, template: &str, data: Value) -> Response {
    let content = match render(template, &data) {
        Ok(html) => html,
        Err(e) => return template_failed(template, &e),
    };
    let layout = json!({
        "title": title,
        "section": "",
        "asset": asset_version(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    match render_layout(&layout, content) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => template_failed("layout.html", &e),
    }
}

/// The layout with the page's already-escaped HTML as its content.
fn render_layout(context: &Value, content: String) -> Result<String, String> {
    let template = ENV.get_template("layout.html").map_err(|e| e.to_string())?;
    let base = JinjaValue::from(minijinja::value::Serde(context));
    let ctx = minijinja::context! {
        content => JinjaValue::from_safe_string(content),
        ..base
    };
    template.render(ctx).map_err(|e| e.to_string())
}

fn template_failed(name: &str, error: &str) -> Response {
    tracing::error!(
        template = name,
        error,
        "dashboard page could not be rendered"
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("This page could not be rendered ({name}); the details are in the server log."),
    )
        .into_response()
}

/// An error page without navigation (no session known).
pub fn bare_error(status: StatusCode, title: &str, detail: &str) -> Response {
    public_page(
        status,
        title,
        "error.html",
        json!({"title": title, "detail": detail, "status": status.as_u16(), "public": true}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        for (name, _) in TEMPLATES {
            assert!(ENV.get_template(name).is_ok(), "{name} does not compile");
        }
    }

    #[test]
    fn an_archived_campaign_shows_where_its_messages_are_instead_of_the_table() {
        let counters = json!({"sent": 2, "delivered": 0, "read": 0, "failed": 1, "undelivered": 0,
            "cancelled": 0, "skipped": 0, "pending": 0});
        let actions = json!([{"name": "resend", "verb": "Resend", "from": ["completed"],
            "when": "completed", "explain": "", "danger": false, "reason": false}]);
        let archived = render(
            "campaign.html",
            &json!({
                "c": {"id": "cmp_1", "status": "completed", "archived_at": "2026-11-28T11:00:00.000Z", "counters": counters},
                "me": {"can_edit": true},
                "actions": actions,
                "messages": [],
                "messages_archived": "campaign cmp_1's message rows were archived at 2026-11-28T11:00:00.000Z",
            }),
        )
        .unwrap();
        assert!(archived.contains("id=\"messages-archived\""), "{archived}");
        assert!(archived.contains("id=\"archived-at\""), "{archived}");
        assert!(archived.contains("2026-11-28 11:00:00 UTC"), "{archived}");
        assert!(archived.contains("id=\"export-messages\""), "{archived}");
        assert!(!archived.contains("id=\"messages-table\""), "{archived}");
        // Resend reads message rows: an archived campaign offers duplicate only.
        let resend_button = |page: &str| {
            let at = page.find("id=\"action-resend\"").expect("a resend button");
            page[at..at + page[at..].find('>').unwrap_or(0)].to_string()
        };
        assert!(resend_button(&archived).contains(" hidden"), "{archived}");
        assert!(archived.contains("cannot be resent"), "{archived}");
        let live = render(
            "campaign.html",
            &json!({"c": {"id": "cmp_1", "status": "completed", "counters": counters}, "me": {"can_edit": true}, "actions": actions, "messages": []}),
        )
        .unwrap();
        assert!(!resend_button(&live).contains(" hidden"), "{live}");
        assert!(live.contains("id=\"messages-table\""), "{live}");
        assert!(
            !live.contains("messages-archived") && !live.contains("archived-at"),
            "{live}"
        );
    }

    #[test]
    fn html_is_escaped() {
        let html = render(
            "error.html",
            &json!({"title": "<script>x</script>", "detail": "a & b"}),
        )
        .unwrap();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>x"), "{html}");
    }

    #[test]
    fn filters_format_for_people() {
        assert_eq!(num(JinjaValue::from(1234567)), "1,234,567");
        assert_eq!(num(JinjaValue::from(12)), "12");
        assert_eq!(rate(JinjaValue::from(12145.75)), "12,146");
        assert_eq!(rate(JinjaValue::from(10.0)), "10");
        assert_eq!(rate(JinjaValue::from(2.46)), "2.5");
        assert_eq!(rate(JinjaValue::from(3.0)), "3");
        assert_eq!(rate(JinjaValue::from(0.04)), "0");
        assert_eq!(rate(JinjaValue::from(0)), "0");
        assert_eq!(label(JinjaValue::from("in_flight")), "In flight");
        assert_eq!(pct(JinjaValue::from(1), JinjaValue::from(3)), 33);
        assert_eq!(pct(JinjaValue::from(1), JinjaValue::from(0)), 0);
        assert_eq!(
            when(JinjaValue::from("2026-11-28T11:00:00.000Z")),
            "2026-11-28 11:00:00 UTC"
        );
    }
}
