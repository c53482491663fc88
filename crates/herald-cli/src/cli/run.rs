//! `herald serve` and `herald worker`.

use super::{CliError, CliResult};
use crate::config::Settings;
use crate::engine::Engine;
use crate::store::Store;
use tokio::sync::watch;

/// The first owner's email, on a database without users (`herald user create` before the
/// first `serve` makes whatever owner you like instead).
pub const FIRST_OWNER_EMAIL: &str = "admin@localhost";

/// Debug builds only: `HERALD_TEST_WINDOW_CLOCK` (an RFC 3339 time) makes send windows
/// judged as if the clock read it at start, moving on from there, so a process test sees a
/// held message sent when its window opens without waiting for the hour
/// (tests/process/send_windows.rs). Release builds have no such variable.
#[cfg(debug_assertions)]
fn test_window_clock() -> Result<Option<crate::engine::WindowClock>, CliError> {
    let Ok(at) = std::env::var("HERALD_TEST_WINDOW_CLOCK") else {
        return Ok(None);
    };
    let ms = crate::clock::parse_rfc3339(&at).map_err(|e| {
        CliError::from(format!(
            "HERALD_TEST_WINDOW_CLOCK `{at}` is not an RFC 3339 time ({e}); unset it"
        ))
    })?;
    let clock = crate::engine::WindowClock::default();
    clock.set(ms);
    tracing::warn!(at, "debug build: send windows judged by a test clock");
    Ok(Some(clock))
}

#[cfg(not(debug_assertions))]
fn test_window_clock() -> Result<Option<crate::engine::WindowClock>, CliError> {
    Ok(None)
}

/// `herald serve` (with `router`, the HTTP surface) or `herald worker` (without).
pub async fn serve(settings: Settings, router: Option<super::RouterFactory>) -> CliResult {
    let with_http = router.is_some();
    // Listen for SIGTERM/SIGINT before anything else: a stop requested while starting up
    // is then a graceful stop right after start, not the default kill.
    let stop = stop_signal();
    let window_clock = test_window_clock()?;
    let store = Store::connect(&settings.database_url).await?;
    if with_http {
        store.migrate().await?;
        if let Some((email, password)) =
            super::accounts::bootstrap_owner(&store, FIRST_OWNER_EMAIL).await?
        {
            tracing::info!(email, "created the first owner");
            println!(
                "Herald created the first owner of organisation `default` (shown only this once):\n  email:    {email}\n  password: {password}\nSign in at http://{}/ and add users under Users.",
                settings.listen
            );
        }
    } else {
        store.require_migrated().await?;
    }
    match store.server_maintenance_problem().await {
        Ok(Some(problem)) => tracing::warn!("{problem}"),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read the database server's settings"),
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = crate::telemetry::metrics_handle();
    let http = if let Some(router) = router {
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| {
                CliError::from(format!(
                    "cannot listen on {}: {e}; pick another address with --listen, e.g. 127.0.0.1:8081",
                    settings.listen
                ))
            })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, store = store.dialect().name(), "listening");
        let app = router(crate::app_state::AppState {
            store: store.clone(),
            metrics,
            context: crate::channels::BuildContext::from_settings(&settings),
            settings: std::sync::Arc::new(settings.clone()),
            webhook_limiter: Default::default(),
        });
        let limits = crate::server::Limits::from_settings(&settings);
        // The peer address (`ConnectInfo`) feeds the per-address sign-in and webhook limits.
        Some(tokio::spawn(crate::server::serve(
            listener,
            app,
            limits,
            shutdown_rx.clone(),
        )))
    } else {
        None
    };
    let mut engine = Engine::new(
        store.clone(),
        settings.clone(),
        if with_http { "serve" } else { "worker" },
    );
    if let Some(clock) = window_clock {
        engine = engine.with_window_clock(clock);
    }
    let engine_task = tokio::spawn(engine.run(shutdown_rx.clone()));
    stop.await;
    tracing::info!("stopping: no new claims; finishing in-flight sends");
    let _ = shutdown_tx.send(true);
    if let Ok(Err(e)) = engine_task.await {
        tracing::error!(error = %e, "engine stopped with an error");
    }
    if let Some(h) = http {
        // Open event streams (SSE) would hold a graceful HTTP shutdown forever: the engine
        // has stopped and nothing is left to report, so they get a moment, then are cut.
        let abort = h.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(3), h)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    store.close().await;
    Ok(0)
}

/// Registers for SIGTERM and SIGINT now (so a signal that arrives during startup is not
/// the default kill) and returns a future that completes on the first of them.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let registered = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match registered {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
