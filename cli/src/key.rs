//! `mt key new NAME`: an Ed25519 key pair for an operator, whose public key
//! goes in the service file's `security.operators` and whose secret key
//! signs the commands `mt` sends (`mt --key-file FILE`, or `MENTAT_KEY`).

use std::path::PathBuf;

use mentat_domain::audit::key_hex;
use mentat_domain::spec::is_valid_name;
use mentat_runtime::keyfile::{self, Created};

use crate::error::{Error, Result};
use crate::output;

/// `mt key`
#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Make a key pair: DIR/NAME.key (secret, mode 0600) and DIR/NAME.pub;
    /// print the public key and the line to add to `security.operators`.
    New(NewArgs),
}

/// `mt key new`
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The operator's name (1-63 characters of a-z, 0-9 and -, starting with
    /// a letter): the files' name, and the name to list in the service file.
    pub name: String,
    /// Directory for the two files [default: $HOME/.mentat/keys].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Run `mt key ...`.
pub fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::New(args) => new(args),
    }
}

fn new(args: NewArgs) -> Result<()> {
    if !is_valid_name(&args.name) {
        return Err(Error::Usage(format!(
            "`{}` is not a key name: 1-63 characters of a-z, 0-9 and -, starting with a letter",
            output::terminal_safe(&args.name)
        )));
    }
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".mentat").join("keys"))
            .ok_or_else(|| Error::Usage("HOME is not set: give --dir".into()))?,
    };
    let secret = dir.join(format!("{}.key", args.name));
    let public = dir.join(format!("{}.pub", args.name));
    if public.exists() {
        return Err(Error::Usage(format!(
            "{} exists: a key is never overwritten; choose another name or remove it",
            public.display()
        )));
    }
    let key = match keyfile::create(&secret) {
        Ok(key) => key,
        Err(Created::Exists) => {
            return Err(Error::Usage(format!(
                "{} exists: a key is never overwritten; choose another name or remove it",
                secret.display()
            )))
        }
        Err(Created::Failed(e)) => return Err(Error::Runtime(e)),
    };
    let hex = key_hex(&key.verifying_key());
    std::fs::write(&public, format!("{hex}\n"))
        .map_err(|e| Error::Runtime(format!("writing {}: {e}", public.display())))?;
    output::print(format!(
        "{hex}\n\
         secret key: {} (mode 0600; keep it to yourself)\n\
         public key: {}\n\
         list it in the service file, with the role it gets (deployer, operator or admin):\n\
         \x20 security:\n\
         \x20   operators:\n\
         \x20     - {{ name: {}, key: {hex}, role: deployer }}\n\
         and sign commands with it: export MENTAT_KEY={}",
        secret.display(),
        public.display(),
        args.name,
        secret.display()
    ));
    Ok(())
}
