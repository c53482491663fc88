//! The `herald` command line. Every command that fails prints one sentence naming what was
//! wrong and what would be right, and exits non-zero.

mod accounts;
mod alert;
mod bench;
mod campaign;
mod campaign_email;
mod channel;
mod doctor;
mod export;
mod replies;
mod run;
mod segment;
mod webhook;

use crate::config::{LoadOptions, LoadedSettings, Settings};
use crate::export::{Export, ExportOf};
use crate::ids::{ChannelId, ListId, OrgId};
use crate::store::Store;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Bulk messaging campaigns that never lose track"
)]
pub struct Cli {
    /// Database: sqlite://herald.db (default) or postgres://user@host/db.
    /// Also HERALD_DATABASE_URL or database_url in herald.toml.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Settings file (default: ./herald.toml when present). Also HERALD_CONFIG.
    #[arg(long, global = true, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Organisation the command acts on: its name, or its id (org_1, or 1).
    #[arg(long, global = true, default_value = "default", value_name = "ORG")]
    pub org: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine and the HTTP server (health, readiness, metrics).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// The URL providers reach this Herald at (callback URLs, webhook signatures).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Maximum concurrent sends of this instance.
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
    },
    /// Run the engine without HTTP.
    Worker {
        /// Maximum concurrent sends of this instance.
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
    },
    /// Apply the embedded database migrations.
    Migrate,
    /// Print a new random secret_key (for HERALD_SECRET_KEY), which seals channel secrets.
    Keygen,
    /// Show the effective settings and where each came from.
    Config {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the database, instances, campaigns and counters; exit 1 when anything is wrong.
    Doctor {
        /// Print the report as JSON (what GET /api/v1/health answers).
        #[arg(long)]
        json: bool,
    },
    /// Run a real campaign through the real engine into the sandbox channel and measure it.
    Bench(bench::BenchArgs),
    /// Manage channels.
    #[command(subcommand)]
    Channel(channel::ChannelCommand),
    /// Manage contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// The organisation's suppression list (STOP replies, bounces, complaints).
    #[command(subcommand)]
    Suppressions(SuppressionsCommand),
    /// Create, run and inspect campaigns.
    #[command(subcommand)]
    Campaign(campaign::CampaignCommand),
    /// Segments: lists defined by a filter on the contacts (docs/SEGMENTS.md).
    #[command(subcommand)]
    Segment(segment::SegmentCommand),
    /// The replies inbox: inbound SMS and WhatsApp messages, as conversations.
    #[command(subcommand)]
    Replies(replies::RepliesCommand),
    /// Manage organisations (tenants).
    #[command(subcommand)]
    Org(accounts::OrgCommand),
    /// Manage the users of --org.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage the API keys of --org.
    #[command(subcommand)]
    Apikey(accounts::ApiKeyCommand),
    /// Manage the webhook endpoints of --org: where Herald sends its events.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Who --org's alerts reach (stuck campaigns, outages, ...), the alert log, a test alert.
    #[command(subcommand)]
    Alert(alert::AlertCommand),
    /// Print the HTTP API's OpenAPI 3.1 document (what /api/v1/openapi.json serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Import contacts from a CSV file (header row with an `address` column).
    Import {
        /// The CSV file.
        #[arg(value_name = "CSV")]
        file: PathBuf,
        /// The list to add them to, by name (created if needed).
        #[arg(long, value_name = "LIST")]
        list: String,
    },
    /// Export the contacts as CSV (docs/CAMPAIGNS.md lists the columns).
    Export {
        /// Only the members of this list: its name, or its id (lst_3).
        #[arg(long, value_name = "LIST")]
        list: Option<String>,
        /// Write to this file instead of stdout (replaced only once the export is whole).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuppressionsCommand {
    /// Export the suppression list as CSV: address, reason, created_at.
    Export {
        /// Write to this file instead of stdout (replaced only once the export is whole).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// A failure to report to the user: one sentence, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError {
            message: e.to_string(),
            code: 2,
        }
    }
}

pub type CliResult = Result<i32, CliError>;

/// Settings with the command's flags on top.
pub fn load_settings(
    cli: &Cli,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<LoadedSettings, CliError> {
    let mut flags = extra;
    if let Some(url) = &cli.database_url {
        flags.insert(
            "database_url".into(),
            serde_json::Value::String(url.clone()),
        );
    }
    Settings::load(LoadOptions {
        config_file: cli.config.clone(),
        flags,
        env: std::env::vars().collect(),
    })
    .map_err(CliError::from)
}

/// Connects and checks the schema; `migrate` runs migrations instead of requiring them.
pub async fn open_store(settings: &Settings, migrate: bool) -> Result<Store, CliError> {
    let store = Store::connect(&settings.database_url).await?;
    if migrate {
        store.migrate().await?;
    } else {
        store.require_migrated().await?;
    }
    Ok(store)
}

/// `--org` takes a name or an id (`org_2`, or `2`).
pub async fn resolve_org(store: &Store, org: &str) -> Result<OrgId, CliError> {
    let id = crate::ids::OrgId::parse_lenient(org).ok();
    match id {
        Some(id) => match store.organisation(id).await {
            Ok(o) => Ok(o.id),
            Err(crate::store::StoreError::NotFound(_)) => Err(CliError::from(format!(
                "organisation `{org}` does not exist: `herald org list` shows them"
            ))),
            Err(e) => Err(e.into()),
        },
        None => match store.organisation_by_name(org).await {
            Ok(o) => Ok(o.id),
            Err(crate::store::StoreError::NotFound(_)) => Err(CliError::from(format!(
                "organisation `{org}` does not exist: `herald org list` shows them, `herald org create NAME` makes one"
            ))),
            Err(e) => Err(e.into()),
        },
    }
}

/// The list named by `text` in `org`: its id (`lst_3`), its name, or, when no list has
/// that name, its bare number (`3`).
pub async fn resolve_list(
    store: &Store,
    org: OrgId,
    text: &str,
) -> Result<crate::store::ListInfo, CliError> {
    use crate::store::StoreError::NotFound;
    let by_id = |id: ListId| async move {
        match store.org_list(org, id).await {
            Ok(row) => store
                .list_by_name(org, &row.name)
                .await
                .map_err(CliError::from),
            Err(NotFound(_)) => Err(CliError::from(format!(
                "there is no list `{id}` in this organisation: `herald contacts import FILE --list NAME` makes one",
            ))),
            Err(e) => Err(e.into()),
        }
    };
    if let Ok(id) = text.parse::<crate::ids::ListId>() {
        return by_id(id).await;
    }
    match store.list_by_name(org, text).await {
        Err(NotFound(_)) if crate::domain::canonical_id(text).is_some() => {
            by_id(ListId::parse_lenient(text)?).await
        }
        other => other.map_err(CliError::from),
    }
}

/// The channel named by `text` in `org`: its id (`chn_5`), its name, or, when no channel
/// has that name, its bare number (`5`).
pub async fn resolve_channel(
    store: &Store,
    org: OrgId,
    text: &str,
) -> Result<crate::store::ChannelInfo, CliError> {
    use crate::store::StoreError::NotFound;
    let by_id = |id: ChannelId| async move {
        let missing = || {
            CliError::from(format!(
                "there is no channel `{id}` in this organisation: `herald channel list` shows them"
            ))
        };
        match store.channel(id).await {
            Ok(c) if c.org_id == org => Ok(c),
            Ok(_) | Err(NotFound(_)) => Err(missing()),
            Err(e) => Err(e.into()),
        }
    };
    if let Ok(id) = text.parse::<crate::ids::ChannelId>() {
        return by_id(id).await;
    }
    match store.channel_by_name(org, text).await {
        Err(NotFound(_)) if crate::domain::canonical_id(text).is_some() => {
            by_id(ChannelId::parse_lenient(text)?).await
        }
        other => other.map_err(CliError::from),
    }
}

/// Who did it, for the audit trail: `cli:USER@HOST`, the operating-system user and host.
/// A name as the API accepts it (1 to 200 characters, no control characters), its
/// problem said as the flag's.
pub fn check_cli_name(flag: &str, name: &str) -> Result<String, CliError> {
    crate::api::check_name("name", name).map_err(|e| {
        let why = e
            .errors
            .first()
            .map_or(e.detail.as_str(), |f| f.detail.as_str());
        CliError::from(format!("{flag} {why}"))
    })
}

pub fn actor() -> String {
    format!("cli:{}@{}", os_user(), host_name())
}

/// The user running the command: $USER, $LOGNAME, or the name /etc/passwd gives the real
/// uid of this process (a container or a cron job often sets neither variable).
fn os_user() -> String {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty());
    if let Some(user) = from_env {
        return user;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(str::to_string))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    user_of_uid(&passwd, &uid).unwrap_or_else(|| format!("uid{uid}"))
}

/// The name /etc/passwd text gives `uid`.
fn user_of_uid(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        (fields.next()? == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// This machine's name: the kernel's, $HOSTNAME, or /etc/hostname.
fn host_name() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    [
        read("/proc/sys/kernel/hostname"),
        std::env::var("HOSTNAME").ok(),
        read("/etc/hostname"),
    ]
    .into_iter()
    .flatten()
    .map(|h| h.trim().to_string())
    .find(|h| !h.is_empty())
    .unwrap_or_else(|| "localhost".into())
}

/// Builds the HTTP router of `herald serve` from its shared state: the API, provider
/// webhooks, health and metrics, and the dashboard. The binary passes
/// `herald::http::router`: the command line never names the dashboard, so changing a page
/// does not recompile it (docs/ARCHITECTURE.md, "Crates and layers").
pub type RouterFactory = fn(crate::app_state::AppState) -> axum::Router;

/// The `herald` binary's whole body: parse the command line, start the runtime, run the
/// command, turn its result into the exit status. Here rather than in `main` so that the
/// commands' async code is compiled once, in this crate, not again in the binary.
pub fn main(router: RouterFactory) -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(cli, router));
    // The command's work is done (and `serve` has drained): a dropped runtime would wait
    // without bound for any blocking task still running, so a command could hang after its
    // answer. CI twice killed a command on SQLite that had not exited (a `campaign start`
    // after 60 s, whose start had committed; a `campaign status` after 30 s). This bounds
    // one possible cause, not a proven one; the harnesses now print what such a command
    // had said, which will tell.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {}", e.message);
            std::process::ExitCode::from(u8::try_from(e.code).unwrap_or(2))
        }
    }
}

pub async fn run(cli: Cli, router: RouterFactory) -> CliResult {
    let mut extra = serde_json::Map::new();
    match &cli.command {
        Command::Serve {
            listen,
            concurrency,
            public_url,
        } => {
            if let Some(l) = listen {
                extra.insert("listen".into(), l.clone().into());
            }
            if let Some(u) = public_url {
                extra.insert("public_url".into(), u.clone().into());
            }
            if let Some(c) = concurrency {
                extra.insert("concurrency".into(), (*c).into());
            }
        }
        Command::Worker {
            concurrency: Some(c),
        } => {
            extra.insert("concurrency".into(), (*c).into());
        }
        _ => {}
    }
    let loaded = load_settings(&cli, extra)?;
    // Long-running commands log their campaign events; one-shot commands print results
    // and keep the log for warnings (RUST_LOG overrides both).
    let long_running = matches!(
        cli.command,
        Command::Serve { .. } | Command::Worker { .. } | Command::Bench(_)
    );
    crate::telemetry::init_logging(
        loaded.settings.log_format,
        if long_running { "info" } else { "warn" },
    );
    let settings = loaded.settings.clone();
    match &cli.command {
        Command::Serve { .. } => run::serve(settings, Some(router)).await,
        Command::Worker { .. } => run::serve(settings, None).await,
        Command::Migrate => {
            let store = Store::connect(&settings.database_url).await?;
            let applied = store.migrate().await?;
            if applied.is_empty() {
                println!("database {} is up to date", store.url());
            } else {
                println!("database {} migrated: applied {:?}", store.url(), applied);
            }
            Ok(0)
        }
        Command::Keygen => {
            println!("{}", crate::secrets::SecretKey::generate());
            Ok(0)
        }
        Command::Config { json } => {
            if *json {
                println!("{}", serde_json::to_string_pretty(&loaded.entries)?);
            } else {
                print!("{}", crate::config::describe(&loaded.entries));
            }
            Ok(0)
        }
        Command::Doctor { json } => doctor::run(&settings, *json).await,
        Command::Bench(args) => bench::run(&settings, args).await,
        Command::Channel(c) => channel::run(&cli, &settings, c).await,
        Command::Contacts(ContactsCommand::Import { file, list }) => {
            let store = open_store(&settings, false).await?;
            let org = resolve_org(&store, &cli.org).await?;
            let report = crate::import::import_csv(&store, org, list, file, |line, reason| {
                eprintln!("{}:{line}: rejected: {reason}", file.display());
            })
            .await?;
            println!(
                "imported {}, updated {}, rejected {}",
                report.imported, report.updated, report.rejected
            );
            Ok(0)
        }
        Command::Contacts(ContactsCommand::Export { list, output }) => {
            let store = open_store(&settings, false).await?;
            let org = resolve_org(&store, &cli.org).await?;
            let list_id = match list {
                Some(l) => Some(resolve_list(&store, org, l).await?.id),
                None => None,
            };
            let filter = crate::store::directory::ContactFilter {
                list_id,
                ..Default::default()
            };
            let export = Export::new(store, org, ExportOf::Contacts(filter));
            let rows = export::write(export, output.as_deref()).await?;
            report_export(rows, "contacts", output.as_deref());
            Ok(0)
        }
        Command::Suppressions(SuppressionsCommand::Export { output }) => {
            let store = open_store(&settings, false).await?;
            let org = resolve_org(&store, &cli.org).await?;
            let export = Export::new(store, org, ExportOf::Suppressions);
            let rows = export::write(export, output.as_deref()).await?;
            report_export(rows, "suppressed addresses", output.as_deref());
            Ok(0)
        }
        Command::Campaign(c) => campaign::run(&cli, &settings, c).await,
        Command::Replies(c) => replies::run(&cli, &settings, c).await,
        Command::Segment(c) => segment::run(&cli, &settings, c).await,
        Command::Org(c) => accounts::org(&cli, &settings, c).await,
        Command::User(c) => accounts::user(&cli, &settings, c).await,
        Command::Apikey(c) => accounts::apikey(&cli, &settings, c).await,
        Command::Webhook(c) => webhook::run(&cli, &settings, c).await,
        Command::Alert(c) => alert::run(&cli, &settings, c).await,
        Command::Openapi => {
            print!("{}", crate::api::openapi_json());
            Ok(0)
        }
    }
}

/// One line on stderr once an export is written (stdout may be the CSV itself).
pub fn report_export(rows: u64, what: &str, output: Option<&std::path::Path>) {
    match output {
        Some(path) => eprintln!("exported {rows} {what} to {}", path.display()),
        None => eprintln!("exported {rows} {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// What lacks help in `cmd` and its subcommands: arguments and flags without help text,
    /// positional arguments shown as a bare `<ID>`, subcommands without a description.
    fn missing_help(cmd: &clap::Command) -> Vec<String> {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path}: `{id}` has no help"));
                }
                let shown: Vec<String> = match arg.get_value_names() {
                    Some(names) => names.iter().map(|n| n.to_string()).collect(),
                    None if arg.is_positional() => vec![id.to_string()],
                    None => Vec::new(),
                };
                if shown.iter().any(|n| n.eq_ignore_ascii_case("id")) {
                    missing.push(format!("{path}: `{id}` is shown as a bare <ID>"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}: no description", sub.get_name()));
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(cmd, "", &mut missing);
        missing
    }

    /// Every argument and flag of every command has help text, and no positional argument is
    /// a bare `<ID>`: `herald … --help` says what to give.
    #[test]
    fn every_argument_has_help() {
        let missing = missing_help(&Cli::command());
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn the_help_walk_notices_a_missing_help() {
        /// A command.
        #[derive(Debug, Parser)]
        struct Bare {
            id: i64,
            #[arg(long)]
            json: bool,
        }
        let missing = missing_help(&Bare::command());
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert!(
            missing.iter().any(|m| m.contains("bare <ID>")),
            "{missing:?}"
        );
    }

    #[test]
    fn ids_are_read_in_both_spellings() {
        for spelling in ["cmp_2", "2"] {
            let cli = Cli::try_parse_from(["herald", "campaign", "start", spelling])
                .expect("a campaign id");
            match cli.command {
                Command::Campaign(campaign::CampaignCommand::Start { id }) => {
                    assert_eq!(id, crate::ids::CampaignId(2))
                }
                other => panic!("parsed as {other:?}"),
            }
        }
        for bad in ["cmp_02", "chn_2", "two", "cmp_+2"] {
            let e = Cli::try_parse_from(["herald", "campaign", "start", bad]).unwrap_err();
            assert!(e.to_string().contains("is not a campaign id"), "{e}");
        }
    }

    #[test]
    fn passwd_lookup_finds_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_of_uid(passwd, "1000").as_deref(), Some("alice"));
        assert_eq!(user_of_uid(passwd, "0").as_deref(), Some("root"));
        assert_eq!(user_of_uid(passwd, "7"), None);
    }
}
