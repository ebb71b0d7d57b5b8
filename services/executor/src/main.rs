//! `mentat-executor`: parse the configuration, set up tracing and signals,
//! and run the executor until SIGTERM or Ctrl-C.

use mentat_executor::Config;
use mentat_runtime::{Shutdown, EXIT_CONFIG};

#[tokio::main]
async fn main() {
    let config: Config = mentat_runtime::parse_flags();
    mentat_runtime::telemetry::init("executor");
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "bad configuration");
        std::process::exit(EXIT_CONFIG);
    }
    if let Err(e) = mentat_executor::run(config, Shutdown::on_signals()).await {
        tracing::error!(error = %format!("{e:#}"), "executor failed");
        std::process::exit(1);
    }
}
