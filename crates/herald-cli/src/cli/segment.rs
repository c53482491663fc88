//! `herald segment …`: segments of --org (docs/SEGMENTS.md), lists defined by a filter on
//! the contacts. The same rows and JSON as the API's `/lists` (a segment is a list with a
//! `filter`) and `POST /segments/count`.

use super::{Cli, CliError, CliResult, open_store, resolve_list, resolve_org};
use crate::api::lists::List;
use crate::config::Settings;
use crate::contact_filter::{self, Filter};
use crate::ids::{ContactId, ListId, OrgId};
use crate::store::directory::{ContactFilter, ListRow};
use crate::store::{Store, StoreError};
use clap::Subcommand;

/// Contacts `segment show` prints.
const SAMPLE: i64 = 10;

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Count the contacts a filter matches now, before saving it.
    Count {
        /// The filter, e.g. 'attributes.plan = "gold" and created since 30d'.
        #[arg(long, value_name = "FILTER")]
        filter: String,
    },
    /// Save a filter as a segment; campaigns take it as their --list.
    Create {
        /// The segment's name (unique among the organisation's lists and segments).
        name: String,
        /// The filter (docs/SEGMENTS.md).
        #[arg(long, value_name = "FILTER")]
        filter: String,
    },
    /// The segments with their filters and live counts.
    List {
        /// Print JSON (the API's list objects), one per line.
        #[arg(long)]
        json: bool,
    },
    /// One segment: its filter, its count and the first contacts it matches.
    Show {
        /// Its id (lst_4) or name.
        segment: String,
        /// Print JSON (the API's list object).
        #[arg(long)]
        json: bool,
    },
    /// Change a segment's filter or name; started campaigns keep their frozen recipients.
    Edit {
        /// Its id (lst_4) or name.
        segment: String,
        /// The new filter.
        #[arg(long, value_name = "FILTER")]
        filter: Option<String>,
        /// The new name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

fn parse(text: &str) -> Result<Filter, CliError> {
    contact_filter::parse(text).map_err(|e| CliError::from(format!("--{e}")))
}

/// The store's refusal of a filter, said as the flag's problem.
fn refused(e: StoreError) -> CliError {
    match e {
        StoreError::Invalid(m) => CliError::from(format!("--{m}")),
        other => other.into(),
    }
}

async fn counted(store: &Store, org: OrgId, id: ListId) -> Result<ListRow, CliError> {
    let mut rows = vec![store.org_list(org, id).await?];
    store.count_segment_members(org, &mut rows).await?;
    Ok(rows.remove(0))
}

/// The segment named by `text`: refused when it is a list whose members are added.
async fn resolve_segment(store: &Store, org: OrgId, text: &str) -> Result<ListRow, CliError> {
    let info = resolve_list(store, org, text).await.map_err(|_| {
        CliError::from(format!(
            "there is no segment `{text}` in this organisation: `herald segment list` shows them, `herald segment create NAME --filter F` makes one"
        ))
    })?;
    let row = counted(store, org, info.id).await?;
    if row.filter.is_none() {
        return Err(CliError::from(format!(
            "`{}` ({}) is a list, not a segment: its members are added; `herald segment list` shows the segments",
            row.name, row.id
        )));
    }
    Ok(row)
}

fn print_row(row: &ListRow) {
    println!(
        "{:<8} {:<24} {:>9}  {}",
        row.id.to_string(),
        row.name,
        row.members,
        row.filter.as_deref().unwrap_or("")
    );
    if let Some(problem) = &row.filter_problem {
        println!("{:<8} cannot run: {problem}", "");
    }
}

pub async fn run(cli: &Cli, settings: &Settings, command: &SegmentCommand) -> CliResult {
    let store = open_store(settings, false).await?;
    let org = resolve_org(&store, &cli.org).await?;
    match command {
        SegmentCommand::Count { filter } => {
            let filter = parse(filter)?;
            let n = store.count_matching(org, &filter).await.map_err(refused)?;
            println!("{n} contacts match {filter}");
        }
        SegmentCommand::Create { name, filter } => {
            let name = super::check_cli_name("NAME", name)?;
            let filter = parse(filter)?;
            let id = store
                .create_segment(org, &name, &filter)
                .await
                .map_err(refused)?;
            let row = counted(&store, org, id).await?;
            println!(
                "created segment {} `{}`: {} contacts match {} now; a campaign freezes them at its start (--list {})",
                row.id,
                row.name,
                row.members,
                row.filter.as_deref().unwrap_or(""),
                row.id
            );
        }
        SegmentCommand::List { json } => {
            let mut rows: Vec<ListRow> = Vec::new();
            let mut after = ListId(0);
            loop {
                let page = store.org_lists(org, after, 500).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                rows.extend(page.into_iter().filter(|l| l.filter.is_some()));
            }
            store.count_segment_members(org, &mut rows).await?;
            if !*json {
                println!("{:<8} {:<24} {:>9}  FILTER", "ID", "NAME", "CONTACTS");
            }
            for row in rows {
                if *json {
                    println!("{}", serde_json::to_string(&List::from(row))?);
                } else {
                    print_row(&row);
                }
            }
        }
        SegmentCommand::Show { segment, json } => {
            let row = resolve_segment(&store, org, segment).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&List::from(row))?);
                return Ok(0);
            }
            println!("{:<8} {:<24} {:>9}  FILTER", "ID", "NAME", "CONTACTS");
            print_row(&row);
            if row.filter_problem.is_none() && row.members > 0 {
                let filter = ContactFilter {
                    list_id: Some(row.id),
                    ..ContactFilter::default()
                };
                let contacts = store
                    .org_contacts(org, &filter, ContactId(0), SAMPLE)
                    .await?;
                println!("first {} of {}:", contacts.len(), row.members);
                for c in contacts {
                    println!(
                        "  {:<8} {:<24} {}",
                        c.id.to_string(),
                        c.address,
                        c.name.as_deref().unwrap_or("")
                    );
                }
            }
        }
        SegmentCommand::Edit {
            segment,
            filter,
            name,
        } => {
            if filter.is_none() && name.is_none() {
                return Err(CliError::from(
                    "give --filter, --name or both: `herald segment edit SEGMENT --filter '…'`",
                ));
            }
            let row = resolve_segment(&store, org, segment).await?;
            let name = name
                .as_deref()
                .map(|n| super::check_cli_name("--name", n))
                .transpose()?;
            // Everything that can refuse the change is checked before either write.
            let filter = filter.as_deref().map(parse).transpose()?;
            if let Some(filter) = &filter {
                store
                    .check_segment_filter(org, filter)
                    .await
                    .map_err(refused)?;
            }
            if let Some(name) = &name {
                store.rename_org_list(org, row.id, name).await?;
            }
            if let Some(filter) = &filter {
                store
                    .update_segment_filter(org, row.id, filter)
                    .await
                    .map_err(refused)?;
            }
            let row = counted(&store, org, row.id).await?;
            println!(
                "segment {} `{}`: {} contacts match {}",
                row.id,
                row.name,
                row.members,
                row.filter.as_deref().unwrap_or("")
            );
        }
    }
    Ok(0)
}
