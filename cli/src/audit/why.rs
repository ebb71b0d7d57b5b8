//! `mt audit why (DEPLOYMENT | POSITION) [--json] [--file F]`: the story of
//! one deployment, told from the log by the domain ([`story`]).

use std::path::PathBuf;

use mentat_domain::story;

use crate::error::{Error, Result};
use crate::output;

/// `mt audit why`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A deployment id (or the start of one, as `mt history` shows it), or
    /// the position in the log of any of its events (a breach, say).
    #[arg(value_name = "DEPLOYMENT|POSITION")]
    pub target: String,
    /// Print the story as JSON, every event whole.
    #[arg(long)]
    pub json: bool,
    /// Read this export (`mt audit export`) instead of asking the planner.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// Tell the story, or say why it cannot be told (exit 1).
pub async fn run(nats: &str, args: Args) -> Result<()> {
    let events = super::read::events(nats, args.file.as_deref()).await?;
    let told = story::find(&events, &args.target)
        .and_then(|id| story::story(&events, &id))
        .map_err(|e| Error::AuditFailed(e.to_string()))?;
    if args.json {
        output::print(output::json_pretty(&told));
    } else {
        output::print(output::story_text(&told));
    }
    Ok(())
}
