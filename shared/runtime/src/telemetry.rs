//! Tracing set-up shared by every binary: `RUST_LOG` filters (default
//! `info`), `MENTAT_LOG_FORMAT=json` switches to JSON lines.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber, naming the process in every line.
pub fn init(process: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MENTAT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_ok() {
        tracing::debug!(process, "tracing initialised");
    }
}
