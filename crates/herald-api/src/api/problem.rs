//! Every API error is an RFC 9457 problem document with a stable `type` per kind of error,
//! and the extractors here turn malformed input into such documents that name the input.

use crate::store::StoreError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Where the problem types are documented (`docs/API.md` lists every one).
pub const PROBLEM_BASE: &str = "https://herald.dev/problems/";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of error; stable, so clients can branch on it.
    #[schema(example = "https://herald.dev/problems/validation-failed")]
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, and what would be right.
    pub detail: String,
    /// For validation failures: one entry per field that broke a rule.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a JSON pointer-like path (`name`, `attributes.city`) or a parameter.
    pub field: String,
    /// The rule it broke: `required`, `max_length`, `format`, `one_of`, `unique`, ...
    pub rule: String,
    pub detail: String,
}

/// An error response from the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Credentials are missing or not valid",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Your role does not allow this",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            detail,
        )
    }

    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "The resource's state does not allow this",
            detail,
        )
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            kind,
            "The request is malformed",
            detail,
        )
    }

    /// A field that breaks a rule: 422 naming the field and the rule.
    pub fn invalid(field: &str, rule: &str, detail: impl Into<String>) -> ApiError {
        let detail = detail.into();
        ApiError {
            errors: vec![FieldError {
                field: field.to_string(),
                rule: rule.to_string(),
                detail: detail.clone(),
            }],
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "The request breaks a validation rule",
                format!("`{field}`: {detail}"),
            )
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Herald failed to handle the request",
            "an unexpected error occurred; it is in the server log",
        )
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("{PROBLEM_BASE}{}", self.kind),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.problem()).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "The request breaks a validation rule",
                m,
            ),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "API request met an unavailable database");
                ApiError {
                    retry_after_secs: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "database-unavailable",
                        "The database is unavailable",
                        "the database did not answer; nothing was changed, try again",
                    )
                }
            }
            e => ApiError::internal(e),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `axum::Json` whose rejections are problem documents naming what is wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // PostgreSQL text cannot hold NUL, and no field needs one: refuse it here, once.
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, super::JSON_BODY_LIMIT)
            .await
            .map_err(|_| too_large())?;
        if bytes.windows(6).any(|w| w == b"\\u0000") {
            return Err(ApiError::invalid(
                "body",
                "no_nul",
                "text fields must not contain the NUL character (\\u0000)",
            ));
        }
        // Every body the API takes is an object; serde would also read a struct from an
        // array (`[null, null]`), which the document does not allow.
        let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match axum::Json::<T>::from_request(req, state).await {
            Ok(_) if !object => Err(ApiError::invalid(
                "body",
                "type",
                "the body must be a JSON object",
            )),
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field: "missing field `name`", "unknown field `x`".
            let text = e.body_text();
            let detail = text
                .split_once(": ")
                .map(|(_, d)| d.to_string())
                .unwrap_or(text);
            let field = detail.split('`').nth(1).unwrap_or("body").to_string();
            let rule = if detail.contains("missing field") {
                "required"
            } else if detail.contains("unknown field") {
                "known_field"
            } else {
                "type"
            };
            ApiError::invalid(&field, rule, detail)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed-json",
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The body's media type is not accepted",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request("unreadable-body", e.body_text())
            }
        }
        other => ApiError::bad_request("unreadable-body", other.body_text()),
    }
}

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "The body is too large",
        format!(
            "JSON bodies are limited to {} KiB; upload contacts as CSV to /api/v1/contacts/import",
            super::JSON_BODY_LIMIT / 1024
        ),
    )
}

/// `axum::extract::Query` whose rejections are problem documents.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid-query",
                title: "A query parameter is not valid",
                ..ApiError::invalid("query", "no_nul", "parameters must not contain NUL (%00)")
            });
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text
        .split_once(": ")
        .map(|(_, d)| d.to_string())
        .unwrap_or(text);
    let field = detail.split('`').nth(1).unwrap_or("query").to_string();
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid-query",
        title: "A query parameter is not valid",
        ..ApiError::invalid(&field, "type", detail)
    }
}

/// `axum::extract::Path` whose rejections are problem documents.
#[derive(Debug, Clone, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.path().contains("%00") {
            return Err(ApiError::not_found("no resource has NUL (%00) in its id"));
        }
        // Ids have one spelling: axum decodes `cmp_%31` to `cmp_1`, so every id parameter
        // (`id`, `contact_id`, …) must appear verbatim as a segment of the undecoded path.
        // Other parameters (a suppressed address) may need percent-encoding.
        if let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && let Some((_, value)) = params.iter().find(|(name, value)| {
                (*name == "id" || name.ends_with("_id"))
                    && !parts.uri.path().split('/').any(|segment| segment == *value)
            })
        {
            return Err(ApiError::not_found(format!(
                "there is no resource `{value}` spelled that way: ids are never percent-encoded; send the id as the API returned it, e.g. cmp_1"
            )));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::not_found(format!("no such resource: {}", rejection.body_text()))
}
