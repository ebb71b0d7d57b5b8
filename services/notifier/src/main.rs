//! `mentat-notifier`: parse the configuration, set up tracing and signals,
//! and run the notifier until SIGTERM or Ctrl-C.

use mentat_notifier::Config;
use mentat_runtime::{Shutdown, EXIT_CONFIG};

#[tokio::main]
async fn main() {
    let config: Config = mentat_runtime::parse_flags();
    mentat_runtime::telemetry::init("notifier");
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "bad configuration");
        std::process::exit(EXIT_CONFIG);
    }
    if let Err(e) = mentat_notifier::run(config, Shutdown::on_signals()).await {
        tracing::error!(error = %format!("{e:#}"), "notifier failed");
        std::process::exit(1);
    }
}
