//! What every Mentat process shares.
//!
//! - [`shutdown`]: one cancellation tree; SIGTERM or Ctrl-C cancels the root,
//!   a second signal exits at once.
//! - [`telemetry`]: structured tracing set up the same way in every binary.
//! - [`config`]: the `mentat.yaml` service file, parsed and validated with
//!   file, line and field named in every error.

pub mod config;
pub mod shutdown;
pub mod telemetry;

pub use shutdown::Shutdown;

/// Exit code for a bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;
