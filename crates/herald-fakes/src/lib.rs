//! `herald-fakes`: local stand-ins for Twilio Programmable Messaging and the WhatsApp
//! Cloud API, for Herald's tests and benchmarks (loopback, no network).
//!
//! ```text
//! herald-fakes twilio   --listen 127.0.0.1:0 --auth-token TOKEN [knobs]
//! herald-fakes whatsapp --listen 127.0.0.1:0 --app-secret S --webhook-url URL [knobs]
//! ```
//!
//! On start it prints exactly one line to stdout, `listening on http://127.0.0.1:PORT`,
//! then serves until killed. Logs go to stderr (`HERALD_FAKES_LOG`, default `warn`).
//! The provider surfaces, magic numbers and knobs are documented in [`twilio`],
//! [`whatsapp`], [`callbacks`] and [`common`], and in `--help` of each subcommand.

mod callbacks;
mod common;
mod twilio;
mod whatsapp;

use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "herald-fakes",
    version,
    about = "Fake Twilio and WhatsApp Cloud API servers with signed status callbacks, for tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Fake Twilio Programmable Messaging (Messages.json create/list/fetch, status callbacks).
    #[command(after_help = twilio::HELP)]
    Twilio(twilio::TwilioArgs),
    /// Fake WhatsApp Cloud API (POST /{version}/{phone_number_id}/messages, status webhooks).
    #[command(after_help = whatsapp::HELP)]
    Whatsapp(whatsapp::WhatsappArgs),
}

/// The Twilio fake's routes for the options `herald-fakes twilio` would be given, to serve
/// in-process (the `http_floor` example measures the fake's own cost with it). Its
/// lifecycle task starts on the first send, inside the runtime that serves it.
pub fn twilio_router(options: &[&str]) -> anyhow::Result<axum::Router> {
    let command = ["herald-fakes", "twilio"].iter().chain(options);
    match Cli::try_parse_from(command)?.cmd {
        Cmd::Twilio(args) => Ok(twilio::router(args)?.0),
        Cmd::Whatsapp(_) => anyhow::bail!("not the Twilio fake"),
    }
}

/// Parses the command line and runs the chosen fake until it is killed.
#[tokio::main]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_FAKES_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-fakes: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (router, knobs) = match cli.cmd {
        Cmd::Twilio(args) => twilio::router(args)?,
        Cmd::Whatsapp(args) => whatsapp::router(args)?,
    };
    let listener = tokio::net::TcpListener::bind(knobs.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    axum::serve(listener, router).await?;
    Ok(())
}
