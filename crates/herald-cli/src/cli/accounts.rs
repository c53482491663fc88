//! `herald org`, `herald user` and `herald apikey`: accounts from the command line, for the
//! first setup and for scripts. Secrets are printed once and stored hashed.

use super::{Cli, CliError, CliResult, open_store, resolve_org};
use crate::config::Settings;
use crate::credentials;
use crate::domain::Role;
use crate::ids::ApiKeyId;
use crate::store::autopause::{AutoPause, DEFAULT};
use clap::Subcommand;
use std::io::BufRead;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation and print its id (org_N).
    Create {
        /// The organisation's name (--org takes it); not a number.
        name: String,
    },
    /// List the organisations.
    List,
    /// Show --org's settings (its auto-pause default, its answer to HELP, its send window).
    Show,
    /// Change --org's settings.
    Set {
        /// The auto-pause default of its campaigns: PERCENT%/WINDOW (e.g. 20%/500: pause a
        /// campaign when more than 20 % of its last 500 outcomes failed permanently), off,
        /// or default (Herald's, 20%/500). A campaign's own setting wins.
        #[arg(long, value_name = "PERCENT%/WINDOW|off|default", value_parser = parse_org_auto_pause)]
        auto_pause: Option<OrgAutoPause>,
        /// What Herald answers an inbound HELP (or INFO) with, up to 1,600 characters; ""
        /// removes it (HELP is then recorded in the inbox, not answered).
        #[arg(long, value_name = "TEXT")]
        help_reply: Option<String>,
        /// The send window its campaigns inherit: HH:MM-HH:MM in each recipient's local
        /// time, optionally with the IANA zone of recipients whose own is unknown
        /// ("08:00-21:00 Europe/Lisbon"); off removes it. docs/CAMPAIGNS.md, "Send windows".
        #[arg(long, value_name = "HH:MM-HH:MM[ ZONE]|off", value_parser = super::campaign::parse_send_window)]
        send_window: Option<String>,
    },
}

/// An organisation's auto-pause default; None: Herald's.
#[derive(Debug, Clone, Copy)]
pub struct OrgAutoPause(Option<AutoPause>);

fn parse_org_auto_pause(s: &str) -> Result<OrgAutoPause, String> {
    if s.trim().eq_ignore_ascii_case("default") {
        return Ok(OrgAutoPause(None));
    }
    s.parse()
        .map(|a| OrgAutoPause(Some(a)))
        .map_err(|e| format!("{e}, or default (Herald's, {DEFAULT})"))
}

fn print_help_reply(text: Option<&str>) {
    match text {
        Some(t) => println!("help reply: {t}"),
        None => println!("help reply: none (HELP is recorded in the inbox, not answered)"),
    }
}

fn print_send_window(window: Option<&str>) {
    match window {
        Some(w) => println!("send window: {w} (each recipient's local time)"),
        None => println!("send window: none (campaigns send at any hour unless they set one)"),
    }
}

fn print_org_auto_pause(setting: Option<AutoPause>) {
    match setting {
        Some(a) => println!("auto-pause {a}"),
        None => println!("auto-pause {DEFAULT} (Herald's default)"),
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user in --org. Prints a one-time password, or reads it from stdin with
    /// --password-stdin.
    Create {
        /// The user's email address, which they sign in with.
        #[arg(long)]
        email: String,
        /// owner, admin, editor or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users of --org.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key in --org and print it (only this once).
    Create {
        /// A name saying what the key is for (e.g. the deploy that uses it).
        #[arg(long)]
        name: String,
        /// owner, admin, editor or viewer.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// List the API keys of --org (never the keys themselves).
    List,
    /// Revoke an API key by id so it stops working at once.
    Revoke {
        /// API key id (key_1, or 1), as `herald apikey list` shows it.
        #[arg(value_name = "KEY", value_parser = ApiKeyId::parse_lenient)]
        id: ApiKeyId,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(&s.to_lowercase())
        .ok_or_else(|| format!("`{s}` is not a role: use owner, admin, editor or viewer"))
}

pub async fn org(cli: &Cli, settings: &Settings, command: &OrgCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    match command {
        OrgCommand::Show => {
            let org = resolve_org(&store, &cli.org).await?;
            print_org_auto_pause(store.org_auto_pause(org).await?);
            print_help_reply(store.org_help_reply(org).await?.as_deref());
            print_send_window(store.org_send_window(org).await?.as_deref());
        }
        OrgCommand::Set {
            auto_pause,
            help_reply,
            send_window,
        } => {
            let org = resolve_org(&store, &cli.org).await?;
            if auto_pause.is_none() && help_reply.is_none() && send_window.is_none() {
                return Err(CliError::from(
                    "nothing to change: give --auto-pause, --help-reply or --send-window",
                ));
            }
            let help = help_reply
                .as_deref()
                .map(crate::store::replies::help_reply_text)
                .transpose()
                .map_err(|(_, e)| CliError::from(format!("--help-reply: {e}")))?;
            if let Some(auto_pause) = auto_pause {
                store.set_org_auto_pause(org, auto_pause.0).await?;
                tracing::info!(org_id = %org, auto_pause = ?auto_pause.0, "organisation auto-pause default changed");
                print_org_auto_pause(auto_pause.0);
            }
            if let Some(help) = help {
                store.set_org_help_reply(org, help.as_deref()).await?;
                tracing::info!(org_id = %org, set = help.is_some(), "organisation help reply changed");
                print_help_reply(help.as_deref());
            }
            if let Some(window) = send_window {
                let window = (window != "off").then_some(window.as_str());
                store
                    .set_org_send_window(org, window, crate::clock::now_ms())
                    .await?;
                tracing::info!(org_id = %org, send_window = window.unwrap_or("off"), "organisation send window changed");
                print_send_window(window);
            }
        }
        OrgCommand::Create { name } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(CliError::from(
                    "an organisation name must be 1 to 200 characters",
                ));
            }
            if name.parse::<i64>().is_ok() || name.starts_with("org_") {
                return Err(CliError::from(format!(
                    "`{name}` looks like an organisation id; --org would confuse the two: pick a name with letters"
                )));
            }
            let id = store.create_organisation(name).await?;
            println!("{}", id);
        }
        OrgCommand::List => {
            for org in store.organisations().await? {
                println!("{}\t{}", org.id, org.name);
            }
        }
    }
    Ok(0)
}

pub async fn user(cli: &Cli, settings: &Settings, command: &UserCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    match command {
        UserCommand::Create {
            email,
            role,
            password_stdin,
        } => {
            let email = credentials::normalise_email(email).map_err(CliError::from)?;
            let (password, generated) = if *password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                let pw = line.trim_end_matches(['\n', '\r']).to_string();
                (pw, false)
            } else {
                (credentials::generate_password(), true)
            };
            if let Some(problem) = credentials::password_problem(&password, &[&email]) {
                return Err(CliError::from(format!(
                    "{}; pass another one on stdin, or omit --password-stdin to get a generated one",
                    problem.detail
                )));
            }
            let pw = password.clone();
            let hash = tokio::task::spawn_blocking(move || credentials::hash_password(&pw))
                .await?
                .map_err(CliError::from)?;
            let user = store.create_user(org, &email, &hash, *role).await?;
            println!("{}", user.id);
            if generated {
                println!("password (shown only now): {password}");
            }
        }
        UserCommand::List => {
            for u in store.users(org).await? {
                println!("{}\t{}\t{}", u.id, u.email, u.role);
            }
        }
    }
    Ok(0)
}

pub async fn apikey(cli: &Cli, settings: &Settings, command: &ApiKeyCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    match command {
        ApiKeyCommand::Create { name, role } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(CliError::from(
                    "an API key name must be 1 to 200 characters",
                ));
            }
            let (key, prefix, digest) = credentials::new_api_key();
            let info = store
                .create_api_key(org, name, *role, &prefix, &digest, &super::actor())
                .await?;
            eprintln!(
                "created {} ({}, {}); the key is shown only now:",
                info.id, info.name, info.role
            );
            println!("{key}");
        }
        ApiKeyCommand::List => {
            for k in store.api_keys(org).await? {
                let state = match k.revoked_at {
                    Some(at) => format!("revoked {}", crate::clock::rfc3339(at)),
                    None => "active".into(),
                };
                println!("{}\t{}\t{}\t{}…\t{}", k.id, k.name, k.role, k.prefix, state);
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let k = store.revoke_api_key(org, *id).await?;
            println!("revoked {} ({})", k.id, k.name);
        }
    }
    Ok(0)
}

/// On the first `herald serve` of a database without users: creates an owner in the
/// `default` organisation and returns its credentials to print once. Several instances
/// starting together create one owner between them.
pub async fn bootstrap_owner(
    store: &crate::store::Store,
    email: &str,
) -> Result<Option<(String, String)>, CliError> {
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let email = credentials::normalise_email(email)
        .map_err(|e| CliError::from(format!("admin_email: {e}")))?;
    let password = credentials::generate_password();
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || credentials::hash_password(&pw))
        .await?
        .map_err(CliError::from)?;
    if store.bootstrap_owner(&email, &hash).await? {
        Ok(Some((email, password)))
    } else {
        Ok(None)
    }
}
