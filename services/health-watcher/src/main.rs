//! `mentat-health-watcher`: parse the configuration, set up tracing and
//! signals, and run the health-watcher until SIGTERM or Ctrl-C.

use mentat_health_watcher::Config;
use mentat_runtime::{Shutdown, EXIT_CONFIG};

#[tokio::main]
async fn main() {
    let config: Config = mentat_runtime::parse_flags();
    mentat_runtime::telemetry::init("health-watcher");
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "bad configuration");
        std::process::exit(EXIT_CONFIG);
    }
    if let Err(e) = mentat_health_watcher::run(config, Shutdown::on_signals()).await {
        tracing::error!(error = %format!("{e:#}"), "health-watcher failed");
        std::process::exit(1);
    }
}
