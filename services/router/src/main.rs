//! `mentat-router`: parse the flags, set up tracing and signals, run.

use std::process::ExitCode;

use mentat_router::{Config, Error};
use mentat_runtime::{Shutdown, EXIT_CONFIG};

// mimalloc rather than the system allocator: a request allocates and frees
// a handful of small blocks (its head buffer, the lists of its and its
// answer's header fields, its boxed state), and mimalloc did that in 7%
// fewer instructions per request when it was chosen. Memory per
// idle connection is the same (about 2 KB); the process starts about 8 MB
// larger (docs/BENCHMARKS.md, Router).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One thread for the first request worker, the admin server, the route
// feed and the statistics; `--workers` adds the others (see `Config::workers`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut config: Config = mentat_runtime::parse_flags();
    if let Err(e) = config.validate() {
        eprintln!("mentat-router: {e}");
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    mentat_runtime::telemetry::init("router");
    match mentat_router::run(config, Shutdown::on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "router failed");
            match e.downcast_ref::<Error>() {
                Some(Error::Config { .. }) => ExitCode::from(EXIT_CONFIG as u8),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
