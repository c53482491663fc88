//! Form posts: the body (URL-encoded, or multipart for file uploads), the CSRF check against
//! the session's token before anything else happens, and the API's problem documents turned
//! into messages next to the fields they name.

use super::{ApiReply, Ctx, Web};
use crate::credentials::constant_time_eq;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;

/// Largest form body accepted (a CSV file upload included).
pub const FORM_LIMIT: usize = 32 * 1024 * 1024;

/// A file sent with a multipart form.
#[derive(Debug, Clone)]
pub struct Upload {
    pub field: String,
    pub filename: String,
    pub data: Bytes,
}

/// A signed-in user's form post whose `_csrf` field matched the session's token.
#[derive(Debug)]
pub struct PostForm {
    pub ctx: Ctx,
    fields: Vec<(String, String)>,
    pub files: Vec<Upload>,
}

impl PostForm {
    /// The field's value, trimmed; "" when absent.
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or_default()
    }

    /// The field's value exactly as sent (passwords, message bodies).
    pub fn raw(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    /// Every value of a field sent more than once (checkboxes of one name), trimmed.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// Every field but the CSRF token, to fill a form in again after an error.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.fields
            .iter()
            .filter(|(k, _)| k != "_csrf" && k != "password")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn file(&self, field: &str) -> Option<&Upload> {
        self.files.iter().find(|f| f.field == field)
    }
}

impl FromRequest<Web> for PostForm {
    type Rejection = Response;

    async fn from_request(req: Request, web: &Web) -> Result<PostForm, Response> {
        let (mut parts, body) = req.into_parts();
        let ctx = Ctx::from_request_parts(&mut parts, web).await?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            super::pages::error_page(
                &ctx,
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large",
                &format!(
                    "forms and uploads are limited to {} MiB; split the file and upload the parts",
                    FORM_LIMIT / 1024 / 1024
                ),
            )
        })?;
        let (fields, files) = if content_type.starts_with("multipart/form-data") {
            parse_multipart(&content_type, &bytes).map_err(|e| {
                super::pages::error_page(
                    &ctx,
                    StatusCode::BAD_REQUEST,
                    "The form could not be read",
                    &e,
                )
            })?
        } else {
            let fields: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&bytes).map_err(|e| {
                    super::pages::error_page(
                        &ctx,
                        StatusCode::BAD_REQUEST,
                        "The form could not be read",
                        &e.to_string(),
                    )
                })?;
            (fields, Vec::new())
        };
        let sent = fields
            .iter()
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if ctx.session.csrf.is_empty() || !constant_time_eq(sent, &ctx.session.csrf) {
            tracing::warn!(
                actor = ctx.session.actor,
                path = ctx.here,
                "dashboard: form refused, CSRF token missing or wrong"
            );
            return Err(super::pages::error_page(
                &ctx,
                StatusCode::FORBIDDEN,
                "This form has expired",
                "the form did not carry this session's security token (it may come from an older session, or from another site); go back, reload the page and send it again",
            ));
        }
        Ok(PostForm { ctx, fields, files })
    }
}

/// What went wrong with a form, for the template: a summary, and a message per field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FormErrors {
    pub summary: Option<String>,
    pub fields: BTreeMap<String, String>,
}

impl FormErrors {
    pub fn none() -> FormErrors {
        FormErrors::default()
    }

    pub fn field(mut self, field: &str, message: impl Into<String>) -> FormErrors {
        self.fields.insert(field.to_string(), message.into());
        self
    }

    /// From the API's problem document: one message per field it names (`name`,
    /// `attributes.city` is shown on `attributes`), the rest in the summary.
    pub fn from_reply(reply: &ApiReply) -> FormErrors {
        let mut fields = BTreeMap::new();
        if let Some(errors) = reply.body["errors"].as_array() {
            for e in errors {
                let field = e["field"].as_str().unwrap_or_default();
                let detail = e["detail"].as_str().unwrap_or_default();
                // Under its full path (`config.latency_ms`) and its first part (`config`).
                let first = field.split(['.', '/', '[']).next().unwrap_or(field);
                for key in [field, first] {
                    if !key.is_empty() {
                        fields
                            .entry(key.to_string())
                            .or_insert_with(|| super::client::capitalise(detail));
                    }
                }
            }
        }
        let summary = if fields.is_empty() {
            reply.message()
        } else {
            format!("Please correct the form: {}", reply.message())
        };
        FormErrors {
            summary: Some(summary),
            fields,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.summary.is_none() && self.fields.is_empty()
    }
}

/// A fresh token for a form's `_idem` field: the form's submission is sent to the API with
/// it as `Idempotency-Key`, so a double submission acts once.
pub fn idempotency_token() -> String {
    crate::credentials::random_token()
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A parameter of a header value: `boundary=x` in `multipart/form-data; boundary=x`.
fn header_param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

type Parsed = (Vec<(String, String)>, Vec<Upload>);

/// Reads a `multipart/form-data` body: text fields, and files (those with a filename).
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Parsed, String> {
    let boundary = header_param(content_type, "boundary")
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or("the multipart form has no boundary")?;
    let delimiter = format!("--{boundary}").into_bytes();
    let next_part = format!("\r\n--{boundary}").into_bytes();
    let mut fields = Vec::new();
    let mut files = Vec::new();
    let mut at =
        find(body, &delimiter, 0).ok_or("the multipart form has no parts")? + delimiter.len();
    loop {
        if body[at..].starts_with(b"--") {
            break;
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err("a multipart delimiter is not followed by a line break".into());
        }
        at += 2;
        let head_end =
            find(body, b"\r\n\r\n", at).ok_or("a multipart part has no end of headers")?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let content_start = head_end + 4;
        let content_end =
            find(body, &next_part, content_start).ok_or("a multipart part is not terminated")?;
        let content = &body[content_start..content_end];
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                name = header_param(value, "name");
                filename = header_param(value, "filename");
            }
        }
        let name = name.ok_or("a multipart part has no field name")?;
        match filename {
            Some(filename) => files.push(Upload {
                field: name,
                filename,
                data: Bytes::copy_from_slice(content),
            }),
            None => fields.push((name, String::from_utf8_lossy(content).into_owned())),
        }
        at = content_end + next_part.len();
    }
    Ok((fields, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_give_fields_and_files() {
        let body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\ntok\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.csv\"\r\nContent-Type: text/csv\r\n\r\naddress\r\n+15550001\r\n\r\n--XyZ--\r\n";
        let (fields, files) =
            parse_multipart("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(fields, vec![("_csrf".to_string(), "tok".to_string())]);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].field, "file");
        assert_eq!(files[0].filename, "c.csv");
        assert_eq!(&files[0].data[..], b"address\r\n+15550001\r\n");
    }

    #[test]
    fn malformed_multipart_bodies_are_errors_not_panics() {
        for body in [
            "",
            "--XyZ",
            "--XyZ\r\nno headers end",
            "--XyZ\r\nA: b\r\n\r\nunterminated",
        ] {
            assert!(
                parse_multipart("multipart/form-data; boundary=XyZ", body.as_bytes()).is_err(),
                "{body}"
            );
        }
        assert!(parse_multipart("multipart/form-data", b"--x--").is_err());
    }

    #[test]
    fn problem_fields_land_on_their_form_field() {
        let reply = ApiReply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            headers: Default::default(),
            body: serde_json::json!({
                "detail": "`name`: must not be empty",
                "errors": [
                    {"field": "name", "rule": "required", "detail": "must not be empty"},
                    {"field": "attributes.city", "rule": "type", "detail": "must be text"},
                ]
            }),
        };
        let e = FormErrors::from_reply(&reply);
        assert_eq!(e.fields["name"], "Must not be empty");
        assert_eq!(e.fields["attributes"], "Must be text");
        assert_eq!(e.fields["attributes.city"], "Must be text");
    }
}
