//! `mt release create|list|show|diff|deploy|promote|rollback`: immutable
//! releases of the whole app, deployed to environments. Commands go to
//! `mentat.cmd.release_*`; list, show and diff ask `mentat.query.release`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mentat_bus::subject;
use mentat_domain::release::diff::{diff, Change};
use mentat_domain::release::{
    EnvironmentView, ReleaseCreate, ReleaseDeploy, ReleasePromote, ReleaseQuery, ReleaseReply,
    ReleaseRollback, ReleaseView, Snapshot,
};
use mentat_runtime::config;

use crate::client;
use crate::error::{Error, Result};
use crate::output;
use crate::send::{self, WhoArgs};

/// `mt release`
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Record an immutable snapshot of every service's definition and image.
    Create(CreateArgs),
    /// List the releases with their states, and what each environment serves.
    List(ListArgs),
    /// Show one release: its snapshot, hash and states.
    Show(ShowArgs),
    /// The fields that differ between two releases, images included.
    Diff(DiffArgs),
    /// Move every service of an environment to a release at once.
    Deploy(DeployArgs),
    /// Deploy to another environment the release serving in one.
    Promote(PromoteArgs),
    /// Take an environment back to its previous release (or the one named).
    Rollback(RollbackArgs),
}

/// `mt release create`
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The release's tag (unique; A-Z, a-z, 0-9, ., _, -, +).
    pub tag: String,
    /// Release notes.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Snapshot this service file [default: what is applied now].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A service's image in the release [default: the one it serves].
    #[arg(long = "image", value_name = "SERVICE=REF", value_parser = service_image)]
    pub images: Vec<(String, String)>,
    /// Deploy it to this environment at once.
    #[arg(long, value_name = "ENV")]
    pub deploy_to: Option<String>,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

fn service_image(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((service, image)) if !service.is_empty() && !image.is_empty() => {
            Ok((service.to_owned(), image.to_owned()))
        }
        _ => Err(format!("`{s}` is not SERVICE=REF")),
    }
}

/// `mt release list`
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only the releases deployed to this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt release show`
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The release.
    pub tag: String,
    /// Print the planner's reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt release diff`
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The first release.
    pub a: String,
    /// The second.
    pub b: String,
    /// Print the changes as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt release deploy`
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The release.
    pub tag: String,
    /// The environment.
    #[arg(long, value_name = "ENV")]
    pub env: String,
    /// Deploy to a protected environment a release that did not go through
    /// its promote_from (recorded; needs --reason).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt release promote`
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The release.
    pub tag: String,
    /// The environment it serves in.
    #[arg(long, value_name = "ENV")]
    pub from: String,
    /// The environment it goes to.
    #[arg(long, value_name = "ENV")]
    pub to: String,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mt release rollback`
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The environment.
    #[arg(long, value_name = "ENV")]
    pub env: String,
    /// The release to go back to [default: the one before the live one].
    #[arg(long, value_name = "TAG")]
    pub to: Option<String>,
    #[command(flatten)]
    pub who: WhoArgs,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `mt release ...`.
pub async fn run(nats: &str, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(args) => create(nats, args).await,
        Cmd::List(args) => list(nats, args).await,
        Cmd::Show(args) => show(nats, args).await,
        Cmd::Diff(args) => diff_of(nats, args).await,
        Cmd::Deploy(args) => {
            let cmd = ReleaseDeploy {
                command_id: Some(mentat_bus::new_id()),
                signature: None,
                tag: args.tag,
                environment: args.env,
                force: args.force,
                actor: args.who.actor(),
                reason: args.who.reason,
            };
            send::send_and_print(nats, "release_deploy", &cmd, args.json).await
        }
        Cmd::Promote(args) => {
            let cmd = ReleasePromote {
                command_id: Some(mentat_bus::new_id()),
                signature: None,
                tag: args.tag,
                from: args.from,
                to: args.to,
                actor: args.who.actor(),
                reason: args.who.reason,
            };
            send::send_and_print(nats, "release_promote", &cmd, args.json).await
        }
        Cmd::Rollback(args) => {
            if args
                .who
                .reason
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
            {
                return Err(Error::Usage("a rollback needs --reason".into()));
            }
            let cmd = ReleaseRollback {
                command_id: Some(mentat_bus::new_id()),
                signature: None,
                environment: args.env,
                to: args.to,
                actor: args.who.actor(),
                reason: args.who.reason,
            };
            send::send_and_print(nats, "release_rollback", &cmd, args.json).await
        }
    }
}

async fn create(nats: &str, args: CreateArgs) -> Result<()> {
    let (services, environments) = match &args.file {
        Some(file) => {
            let f = config::load_file(file)?;
            (Some(f.services), f.environments)
        }
        None => (None, None),
    };
    let cmd = ReleaseCreate {
        command_id: Some(mentat_bus::new_id()),
        signature: None,
        tag: args.tag,
        description: args.description,
        services,
        environments,
        images: args.images.into_iter().collect::<BTreeMap<_, _>>(),
        deploy_to: args.deploy_to,
        actor: args.who.actor(),
        reason: args.who.reason,
    };
    send::send_and_print(nats, "release_create", &cmd, args.json).await
}

/// The planner's answer to `query`.
pub async fn ask(
    bus: &mentat_bus::Bus,
    query: &ReleaseQuery,
) -> Result<(Vec<ReleaseView>, Vec<EnvironmentView>)> {
    let reply: ReleaseReply =
        client::query(bus, subject::QUERY_RELEASE, query, client::QUERY_TIMEOUT).await?;
    match reply {
        ReleaseReply::Ok {
            releases,
            environments,
        } => Ok((releases, environments)),
        ReleaseReply::Rejected { kind, reason } => Err(Error::Rejected { kind, reason }),
    }
}

async fn list(nats: &str, args: ListArgs) -> Result<()> {
    let bus = client::connect(nats).await?;
    let query = ReleaseQuery {
        tag: None,
        environment: args.env,
    };
    let (releases, environments) = ask(&bus, &query).await?;
    if args.json {
        output::print(output::json_pretty(&serde_json::json!({
            "releases": releases,
            "environments": environments,
        })));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .rev()
        .map(|r| {
            let mut state = r.state.replace('_', " ");
            if !r.deployed_in.is_empty() {
                state = format!("{state} ({})", r.deployed_in.join(", "));
            }
            if !r.rolled_back_in.is_empty() && r.state != "rolled_back" {
                state = format!("{state}; rolled back in {}", r.rolled_back_in.join(", "));
            }
            vec![
                r.tag.clone(),
                state,
                r.hash.chars().take(12).collect(),
                output::utc(r.created_at_ms),
                r.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut text = output::table(
        "",
        &["TAG", "STATE", "HASH", "CREATED", "DESCRIPTION"],
        &rows,
    );
    text.push('\n');
    text.push_str(&environments_text(&environments));
    output::print(text);
    Ok(())
}

/// What each environment serves and since when.
pub fn environments_text(environments: &[EnvironmentView]) -> String {
    let rows: Vec<Vec<String>> = environments
        .iter()
        .map(|e| {
            let in_flight = e
                .history
                .iter()
                .rev()
                .find(|h| matches!(h.outcome.as_str(), "in_progress" | "switched"))
                .map(|h| format!("{} {}", h.tag, h.outcome.replace('_', " ")))
                .unwrap_or_default();
            vec![
                e.name.clone(),
                e.live.clone().unwrap_or_else(|| "-".into()),
                e.live_since_ms.map(output::utc).unwrap_or_default(),
                in_flight,
                if e.protected {
                    format!(
                        "protected, from {}",
                        e.promote_from.as_deref().unwrap_or("-")
                    )
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    output::table(
        "",
        &["ENVIRONMENT", "LIVE", "SINCE", "DEPLOYING", ""],
        &rows,
    )
}

async fn one(bus: &mentat_bus::Bus, tag: &str) -> Result<ReleaseView> {
    let query = ReleaseQuery {
        tag: Some(tag.to_owned()),
        environment: None,
    };
    let (mut releases, _) = ask(bus, &query).await?;
    releases
        .pop()
        .ok_or_else(|| Error::Runtime(format!("the planner sent no release {tag}")))
}

async fn show(nats: &str, args: ShowArgs) -> Result<()> {
    let bus = client::connect(nats).await?;
    let r = one(&bus, &args.tag).await?;
    if args.json {
        output::print(output::json_pretty(&r));
        return Ok(());
    }
    let mut text = format!(
        "release {}\nhash     {}\nstate    {}\ncreated  {} by {}\n",
        r.tag,
        r.hash,
        r.state.replace('_', " "),
        output::utc(r.created_at_ms),
        r.actor.as_deref().unwrap_or("-")
    );
    if !r.deployed_in.is_empty() {
        text.push_str(&format!("serving  {}\n", r.deployed_in.join(", ")));
    }
    if let Some(from) = &r.derived_from {
        text.push_str(&format!("derived from {from}\n"));
    }
    if let Some(d) = &r.description {
        text.push_str(&format!("\n{d}\n"));
    }
    text.push_str("\nimages:\n");
    for (service, image) in &r.images {
        text.push_str(&format!("  {service}: {image}\n"));
    }
    text.push_str("\nservices:\n");
    text.push_str(&output::json_pretty(&r.services));
    output::print(text);
    Ok(())
}

fn snapshot(r: ReleaseView) -> Snapshot {
    Snapshot {
        tag: r.tag,
        description: r.description,
        hash: r.hash,
        services: r.services,
        images: r.images,
        derived_from: r.derived_from,
        at_ms: r.created_at_ms,
    }
}

async fn diff_of(nats: &str, args: DiffArgs) -> Result<()> {
    let bus = client::connect(nats).await?;
    let a = snapshot(one(&bus, &args.a).await?);
    let b = snapshot(one(&bus, &args.b).await?);
    let changes: Vec<Change> = diff(&a, &b);
    if args.json {
        output::print(output::json_pretty(&changes));
        return Ok(());
    }
    if changes.is_empty() {
        output::print(format!(
            "{} and {} have the same content ({})",
            a.tag,
            b.tag,
            &a.hash[..12.min(a.hash.len())]
        ));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = changes
        .into_iter()
        .map(|c| {
            vec![
                c.path,
                c.before.unwrap_or_else(|| "-".into()),
                c.after.unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::print(output::table("", &["FIELD", &a.tag, &b.tag], &rows));
    Ok(())
}
