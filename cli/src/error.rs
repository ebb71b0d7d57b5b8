//! The errors of `mt`, each with the exit code it ends the process with.

use mentat_domain::command::RejectKind;
use mentat_runtime::config::ConfigError;

/// Exit codes, as documented in `mt --help`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The deployment failed or was reverted, the command was rejected or
    /// its identity may not send it, or `mt audit verify` found the log
    /// broken or an anchor forged.
    pub const FAILED: u8 = 1;
    /// NATS could not be reached or is older than 2.10, or another error at run time.
    pub const RUNTIME: u8 = 2;
    /// The planner did not answer.
    pub const NO_PLANNER: u8 = 3;
    /// `--timeout` passed while following a deployment that is still running.
    pub const WAIT_TIMED_OUT: u8 = 4;
    /// Bad config file or command-line usage (`EX_USAGE`).
    pub const USAGE: u8 = 64;
}

/// The `--help` paragraph listing the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   the deployment failed or was reverted, the command was rejected
      or its identity may not send it, or mt audit verify found the log
      broken or an anchor forged
  2   NATS could not be reached or is older than 2.10, or another error at run time
  3   the planner did not answer (a command stays queued in JetStream)
  4   --timeout passed while the deployment was still running
  64  bad config file or command-line usage";

/// Everything that makes `mt` exit with a non-zero code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is invalid; nothing was sent. Exit 64.
    #[error("{0}\nnothing was applied")]
    Config(#[from] ConfigError),
    /// Bad command-line usage that clap could not catch. Exit 64.
    #[error("{0}")]
    Usage(String),
    /// NATS did not accept a connection. Exit 2.
    #[error(
        "{}\nis Mentat running? Start it on this machine with `mt up`, \
         or point --nats (or MENTAT_NATS_URL) at your NATS server",
        unreachable(url, detail)
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Nobody answered a command or query. Exit 3.
    #[error("{}", planner_silent(subject, *secs, *no_responders, *queued))]
    PlannerSilent {
        /// The subject of the request.
        subject: String,
        /// How long we waited.
        secs: u64,
        /// True when the server said at once that nobody listens on it.
        no_responders: bool,
        /// True for a command, which JetStream keeps until the planner reads it.
        queued: bool,
    },
    /// The planner refused the command or query. Exit 1.
    #[error("rejected ({kind}): {reason}")]
    Rejected {
        /// What kind of refusal.
        kind: RejectKind,
        /// Why, as the planner said.
        reason: String,
    },
    /// The NATS server refused this identity the operation (a viewer's
    /// credentials sending a command). Exit 1.
    #[error(
        "unauthorised: the NATS server refused to let this identity {action} on {subject}; \
             use credentials allowed to (the operator's, in MENTAT_NATS_CREDS or --nats-creds)"
    )]
    Unauthorised {
        /// `publish` or `subscribe`.
        action: &'static str,
        /// The subject refused.
        subject: String,
    },
    /// The deployment ended without completing. Exit 1.
    #[error("deployment {deployment_id} {outcome}: {reason}")]
    DeploymentFailed {
        /// Deployment id.
        deployment_id: String,
        /// `reverted` or `failed`.
        outcome: &'static str,
        /// Why, as recorded by the planner.
        reason: String,
    },
    /// The log's hash chain does not hold, or an anchor is forged; or what
    /// an audit asked about is not in the log. Exit 1.
    #[error("{0}")]
    AuditFailed(String),
    /// `--timeout` passed while the deployment was still running. Exit 4.
    #[error(
        "gave up waiting after {secs}s; deployment {deployment_id} is still running: \
         follow it with `mt history {service}` or `mt status {service}`"
    )]
    WaitTimedOut {
        /// Deployment id.
        deployment_id: String,
        /// Service.
        service: String,
        /// The `--timeout` value.
        secs: u64,
    },
    /// Anything else at run time (bus, I/O, child processes). Exit 2.
    #[error("{0}")]
    Runtime(String),
}

fn unreachable(url: &str, detail: &str) -> String {
    if detail.contains(url) {
        detail.to_owned()
    } else {
        format!("cannot reach NATS at {url}: {detail}")
    }
}

fn planner_silent(subject: &str, secs: u64, no_responders: bool, queued: bool) -> String {
    let what = if no_responders {
        format!("the planner is not running: nobody listens on {subject}")
    } else {
        format!("the planner did not answer on {subject} within {secs}s")
    };
    let then = if queued && !no_responders {
        "the command stays queued in JetStream and will be handled when the planner is back"
    } else {
        "start Mentat with `mt up`, or check the planner's logs"
    };
    format!("{what}; {then}")
}

impl Error {
    /// The exit code this error ends `mt` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => exit::USAGE,
            Error::Rejected { .. }
            | Error::Unauthorised { .. }
            | Error::DeploymentFailed { .. }
            | Error::AuditFailed(_) => exit::FAILED,
            Error::PlannerSilent { .. } => exit::NO_PLANNER,
            Error::WaitTimedOut { .. } => exit::WAIT_TIMED_OUT,
            Error::Unreachable { .. } | Error::Runtime(_) => exit::RUNTIME,
        }
    }
}

impl From<mentat_bus::Error> for Error {
    fn from(e: mentat_bus::Error) -> Self {
        match e {
            mentat_bus::Error::Unauthorised { action, subject } => {
                Error::Unauthorised { action, subject }
            }
            e @ (mentat_bus::Error::Insecure { .. } | mentat_bus::Error::Credentials { .. }) => {
                Error::Usage(e.to_string())
            }
            e => Error::Runtime(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Runtime(e.to_string())
    }
}

/// Result with the CLI [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_documented_exit_code() {
        let silent = Error::PlannerSilent {
            subject: "mentat.cmd.deploy".into(),
            secs: 10,
            no_responders: false,
            queued: true,
        };
        assert_eq!(silent.exit_code(), 3);
        assert!(silent.to_string().contains("queued in JetStream"));
        let rejected = Error::Rejected {
            kind: RejectKind::Invalid,
            reason: "no".into(),
        };
        assert_eq!(rejected.exit_code(), 1);
        assert_eq!(Error::Usage("bad".into()).exit_code(), 64);
        for code in [0, 1, 2, 3, 4, 64] {
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {code:<3} ")),
                "{code}"
            );
        }
    }
}
