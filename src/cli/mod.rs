//! The `herald` command line. Every command that fails prints one sentence naming what was
//! wrong and what would be right, and exits non-zero.

mod accounts;
mod bench;
mod campaign;
mod channel;
mod doctor;
mod run;

use crate::config::{LoadOptions, LoadedSettings, Settings};
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
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Settings file (default: ./herald.toml when present). Also HERALD_CONFIG.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Organisation (name or id) the command acts on.
    #[arg(long, global = true, default_value = "default")]
    pub org: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine and the HTTP server (health, readiness, metrics).
    Serve {
        /// Address to listen on.
        #[arg(long)]
        listen: Option<String>,
        /// The URL providers reach this Herald at (callback URLs, webhook signatures).
        #[arg(long)]
        public_url: Option<String>,
        /// Maximum concurrent sends of this instance.
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Run the engine without HTTP.
    Worker {
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Apply the embedded database migrations.
    Migrate,
    /// Print a new random secret_key (for HERALD_SECRET_KEY), which seals channel secrets.
    Keygen,
    /// Show the effective settings and where each came from.
    Config {
        #[arg(long)]
        json: bool,
    },
    /// Check the database, instances, campaigns and counters; exit 1 when anything is wrong.
    Doctor {
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
    /// Create, run and inspect campaigns.
    #[command(subcommand)]
    Campaign(campaign::CampaignCommand),
    /// Manage organisations (tenants).
    #[command(subcommand)]
    Org(accounts::OrgCommand),
    /// Manage the users of --org.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage the API keys of --org.
    #[command(subcommand)]
    Apikey(accounts::ApiKeyCommand),
    /// Print the HTTP API's OpenAPI 3.1 document (what /api/v1/openapi.json serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum ContactsCommand {
    /// Import contacts from a CSV file (header row with an `address` column).
    Import {
        file: PathBuf,
        /// The list to add them to (created if needed).
        #[arg(long)]
        list: String,
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
pub async fn resolve_org(store: &Store, org: &str) -> Result<i64, CliError> {
    let id = org.strip_prefix("org_").unwrap_or(org).parse::<i64>().ok();
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

/// Who did it, for the audit trail.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("cli:{user}@{host}")
}

pub async fn run(cli: Cli) -> CliResult {
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
        Command::Serve { .. } => run::serve(settings, true).await,
        Command::Worker { .. } => run::serve(settings, false).await,
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
        Command::Campaign(c) => campaign::run(&cli, &settings, c).await,
        Command::Org(c) => accounts::org(&settings, c).await,
        Command::User(c) => accounts::user(&cli, &settings, c).await,
        Command::Apikey(c) => accounts::apikey(&cli, &settings, c).await,
        Command::Openapi => {
            print!("{}", crate::api::openapi_json());
            Ok(0)
        }
    }
}
