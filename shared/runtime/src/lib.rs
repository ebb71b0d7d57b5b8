//! What every Mentat process shares.
//!
//! - [`shutdown`]: one cancellation tree; SIGTERM or Ctrl-C cancels the root,
//!   a second signal exits at once.
//! - [`telemetry`]: structured tracing set up the same way in every binary.
//! - [`config`]: the `mentat.yaml` service file, parsed and validated with
//!   file, line and field named in every error.
//! - [`secrets`]: database URLs with passwords kept off command lines.
//! - [`keyfile`]: Ed25519 secret keys in files only their owner may read.
//! - [`nats_access`]: the NATS credentials flags every component takes.
//! - [`metrics`]: the Prometheus recorder and the `/metrics` admin server.

pub mod config;
pub mod keyfile;
pub mod metrics;
pub mod nats_access;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;

pub use nats_access::NatsAccess;
pub use shutdown::Shutdown;

/// Exit code for a bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Parse a binary's flags; `--help` and `--version` print and exit 0, a
/// usage error prints and exits [`EXIT_CONFIG`] (clap alone would exit 2).
pub fn parse_flags<C: clap::Parser>() -> C {
    match C::try_parse() {
        Ok(config) => config,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(EXIT_CONFIG);
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    }
}
