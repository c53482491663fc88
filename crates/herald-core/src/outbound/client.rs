//! The one HTTP client for destinations someone configured (provider APIs, webhook
//! endpoints): names resolve through the outbound guard, IP literals are checked before
//! each request, redirects are never followed. Also the plain client for addresses Herald
//! chose itself. It lives with the guard so that nothing that sends over HTTP needs the
//! channels to get one.
//!
//! reqwest and lettre are built on rustls without a default crypto provider, so the ring
//! provider is installed once per process before the first client is built.

use super::{GuardedResolver, OutboundGuard, Refused};
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

/// Time allowed to open a connection (DNS, TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request, response body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Installs rustls' ring provider as the process default, once. Another provider being
/// installed already (by a test or another library) is fine.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A plain client with the default timeouts, for addresses Herald chose itself (a fake it
/// started, its own stats endpoint). Anything a tenant or the operator configured goes
/// through [`ProviderClient`] instead, which applies the outbound guard.
///
/// # Panics
/// When the TLS backend cannot be initialised at all, which no configuration can cause;
/// use [`try_client`] to get that as an error instead.
pub fn client() -> reqwest::Client {
    match try_client() {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

/// The plain client of [`client`], or why it cannot be built.
pub fn try_client() -> Result<reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            install_crypto_provider();
            base_builder(CONNECT_TIMEOUT, REQUEST_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .clone()
}

/// Timeouts, no redirects (a provider API never redirects a create, and following one
/// would turn a POST into a GET and take the credentials to a host nobody checked), and
/// Herald's user agent.
fn base_builder(connect: Duration, request: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(request)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
}

/// The HTTP client for provider APIs and every other destination someone configured:
/// names resolve through the outbound guard (the addresses connected to are the checked
/// ones, so DNS rebinding cannot pass), IP literals are checked before each request (a
/// resolver never sees them), redirects are not followed. Cloning shares the pool.
#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    guard: OutboundGuard,
}

/// Why a guarded request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// The guard refused the destination; nothing was sent.
    Refused(Refused),
    /// The request could not be built, sent or answered.
    Transport(reqwest::Error),
}

impl ProviderClient {
    pub fn get(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.http.get(url)
    }

    pub fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.http.post(url)
    }

    /// Sends a request built from this client, unless the guard refuses its destination.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let (http, request) = request.build_split();
        let request = request.map_err(Failure::Transport)?;
        self.guard
            .check_url(request.url())
            .map_err(Failure::Refused)?;
        http.execute(request).await.map_err(Failure::Transport)
    }
}

/// A provider client with its own timeouts (tests use short ones) applying `guard`.
pub fn build_client(
    connect: Duration,
    request: Duration,
    guard: OutboundGuard,
) -> Result<ProviderClient, String> {
    install_crypto_provider();
    let http = base_builder(connect, request)
        // Through an HTTP(S)_PROXY from the environment the proxy would resolve and
        // connect, and the guard would check only the proxy's address: direct
        // connections keep the check on the address actually connected to.
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            guard: guard.clone(),
        }))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(ProviderClient { http, guard })
}
