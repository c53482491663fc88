//! The HTTP API, in process: the real router over a real store on both backends, called
//! with `tower::ServiceExt::oneshot` as a client would call it.

mod accounts;
mod alerts;
mod authz;
mod campaign_derive;
mod campaigns;
mod channels;
mod contacts;
mod conventions;
mod document_truth;
mod email;
mod errors;
mod estimate;
mod exports;
mod hardening;
mod outbound_guard;
mod outcomes;
mod replies;
mod retention;
mod segments;
mod send_windows;
mod webhooks;

use crate::support::TestDb;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use herald::api::credentials;
use herald::channels::BuildContext;
use herald::domain::Role;
use herald::http::AppState;
use herald::ids::OrgId;
use herald::outbound::OutboundGuard;
use serde_json::Value;
use tower::ServiceExt;

/// A 32-byte key (base64) so channel secrets can be sealed in tests.
pub const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A router over a fresh database with two organisations: `default` (the caller's, in
/// most tests) and `other` (whose resources must stay invisible).
pub struct TestApp {
    pub db: TestDb,
    pub router: Router,
    pub org: OrgId,
    pub other_org: OrgId,
}

/// What a request returned.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Reply {
        assert_eq!(self.status, status, "unexpected reply: {}", self.text);
        self
    }

    /// Asserts a problem document of the given type suffix.
    #[track_caller]
    pub fn expect_problem(&self, status: StatusCode, kind: &str) -> &Reply {
        self.expect(status);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(
            self.body["type"],
            format!("https://herald.dev/problems/{kind}"),
            "{}",
            self.text
        );
        assert_eq!(self.body["status"], status.as_u16());
        self
    }
}

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Key(String),
    /// Session cookie and the CSRF token to send (None: send no token).
    Session {
        cookie: String,
        csrf: Option<String>,
    },
}

impl TestApp {
    /// The app most tests use: its channels may reach loopback, where the tests' fake
    /// providers listen (`outbound_allow_private = true`).
    pub async fn new(backend: crate::support::Backend) -> TestApp {
        TestApp::with_outbound(backend, OutboundGuard::allow_all()).await
    }

    /// The app with the outbound guard `outbound` (the default guard refuses loopback and
    /// private destinations).
    pub async fn with_outbound(
        backend: crate::support::Backend,
        outbound: OutboundGuard,
    ) -> TestApp {
        let db = TestDb::new(backend).await;
        let org = db.store.default_org().await.unwrap();
        let other_org = db.store.create_organisation("other").await.unwrap();
        let router = herald::http::router(AppState {
            store: db.store.clone(),
            metrics: None,
            context: BuildContext {
                public_url: Some("http://herald.test".into()),
                secret_key: Some(SECRET_KEY.into()),
                outbound,
            },
            settings: Default::default(),
            webhook_limiter: Default::default(),
        });
        TestApp {
            db,
            router,
            org,
            other_org,
        }
    }

    /// The same app (database, organisations, outbound guard allowing loopback) served
    /// with `settings`.
    pub fn with_settings(mut self, settings: herald::config::Settings) -> TestApp {
        self.router = herald::http::router(AppState {
            store: self.db.store.clone(),
            metrics: None,
            context: BuildContext {
                public_url: Some("http://herald.test".into()),
                secret_key: Some(SECRET_KEY.into()),
                outbound: OutboundGuard::allow_all(),
            },
            settings: std::sync::Arc::new(settings),
            webhook_limiter: Default::default(),
        });
        self
    }

    /// A new API key of `org` with `role`.
    pub async fn key(&self, org: OrgId, role: Role) -> String {
        let (key, prefix, digest) = credentials::new_api_key();
        self.db
            .store
            .create_api_key(org, &format!("test-{role}"), role, &prefix, &digest, "test")
            .await
            .unwrap();
        key
    }

    /// A user of `org` with `role` and password `password`.
    pub async fn user(&self, org: OrgId, email: &str, role: Role, password: &str) {
        let hash = credentials::hash_password(password).unwrap();
        self.db
            .store
            .create_user(org, email, &hash, role)
            .await
            .unwrap();
    }

    /// Signs in and returns the session cookie (`herald_session=…`) and CSRF token.
    pub async fn sign_in(&self, email: &str, password: &str) -> (String, String) {
        let reply = self
            .call(
                Method::POST,
                "/api/v1/auth/login",
                &Auth::None,
                Some(serde_json::json!({"email": email, "password": password})),
            )
            .await;
        reply.expect(StatusCode::OK);
        let cookie = reply
            .headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string();
        let csrf = reply.body["csrf_token"].as_str().unwrap().to_string();
        (cookie, csrf)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<Value>,
    ) -> Reply {
        self.send(
            method,
            path,
            auth,
            &[],
            body.map(|b| ("application/json", b.to_string())),
        )
        .await
    }

    /// A request with extra headers and an optional (content type, body).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Reply {
        let (content_type, body) = match body {
            Some((ct, b)) => (Some(ct), Body::from(b)),
            None => (None, Body::empty()),
        };
        self.send_body(method, path, auth, headers, content_type, body)
            .await
    }

    /// A request with any body, e.g. one streamed chunk by chunk (`Body::from_stream`).
    pub async fn send_body(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Body,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        match auth {
            Auth::None => {}
            Auth::Key(k) => req = req.header(header::AUTHORIZATION, format!("Bearer {k}")),
            Auth::Session { cookie, csrf } => {
                req = req.header(header::COOKIE, cookie);
                if let Some(t) = csrf {
                    req = req.header("x-csrf-token", t);
                }
            }
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(body).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.call(Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: &Auth, body: Value) -> Reply {
        self.call(Method::POST, path, auth, Some(body)).await
    }
}

/// A campaign of the caller's organisation on its sandbox channel to `list`, created and
/// started (its messages queued; no engine runs); its id and the channel's.
pub async fn started_sandbox_campaign(
    app: &TestApp,
    list: herald::ids::ListId,
    name: &str,
    body: &str,
) -> (herald::ids::CampaignId, herald::ids::ChannelId) {
    let store = &app.db.store;
    let channel = store.channel_by_name(app.org, "sandbox").await.unwrap().id;
    let id = store
        .create_campaign(
            &herald::store::NewCampaign {
                org_id: app.org,
                name: name.into(),
                channel_id: channel,
                list_id: list,
                body: body.into(),
                scheduled_at: None,
                whatsapp_template: None,
                email: None,
                send_window: None,
            },
            "test",
        )
        .await
        .unwrap();
    let started = store
        .start_campaign(id, herald::clock::now_ms(), "test", None)
        .await
        .unwrap();
    assert!(matches!(
        started,
        herald::store::StartOutcome::Started { .. }
    ));
    (id, channel)
}

/// Runs an async test body against a fresh `TestApp` on each store.
macro_rules! api_test {
    ($name:ident, |$app:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $app = $crate::api::TestApp::new($crate::support::Backend::Sqlite).await;
                $body.await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $app = $crate::api::TestApp::new($crate::support::Backend::Postgres).await;
                $body.await;
            }
        }
    };
}
pub(crate) use api_test;
