//! `mt security init`: the NATS identities of a cluster set up by hand.

use std::path::PathBuf;

use mentat_bus::identities::{self, Identity, Role};

use crate::error::{Error, Result};

/// `mt security …`
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Make one NATS identity per component (nkey seeds, 0600) and the
    /// nats-server configuration that lets each do only what it needs.
    /// Identities already in DIR are kept: delete a file and run it again
    /// to rotate that one.
    Init(InitArgs),
}

/// `mt security init`
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to keep the identities and the configuration in (0700).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The host ids of the executors, each of which gets its own identity.
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub executor_hosts: Vec<String>,
}

/// Run `mt security …`.
pub fn run(cmd: Cmd) -> Result<()> {
    let Cmd::Init(args) = cmd;
    if let Some(bad) = args
        .executor_hosts
        .iter()
        .find(|h| !mentat_domain::limits::is_valid_host_id(h))
    {
        return Err(Error::Usage(format!(
            "--executor-hosts: `{}` is not a host id (1-63 characters of a-z, 0-9 and -)",
            crate::output::terminal_safe(bad)
        )));
    }
    let made = identities::init(&args.dir, &Role::all(&args.executor_hosts))?;
    print!("{}", summary(&args.dir, &made));
    Ok(())
}

/// What was made and what to do with it.
fn summary(dir: &std::path::Path, made: &[Identity]) -> String {
    let mut out =
        String::from("identities (give each component its own with --nats-creds FILE):\n");
    for identity in made {
        out.push_str(&format!(
            "  {:<24} {}\n",
            identity.role.name(),
            identity.path.display()
        ));
    }
    out.push_str(&format!(
        "nats-server configuration: {}\n\
         run every NATS server with it (`nats-server -c {} -js ...`, or `include` it in \
         your own configuration); restart them, and the components, after a rotation.\n\
         on each host, give its executor executor-<host>.nk and its router router.nk; \
         operators use operator.nk (export MENTAT_NATS_CREDS=...), observers viewer.nk.\n",
        dir.join(identities::SERVER_CONFIG).display(),
        dir.join(identities::SERVER_CONFIG).display()
    ));
    out
}
