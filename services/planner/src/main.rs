//! `mentat-planner`: parse flags, set up tracing and signals, run.

#[tokio::main]
async fn main() {
    let config: mentat_planner::Config = mentat_runtime::parse_flags();
    mentat_runtime::telemetry::init("planner");
    let shutdown = mentat_runtime::Shutdown::on_signals();
    if let Err(e) = mentat_planner::run(config, shutdown).await {
        tracing::error!(error = format!("{e:#}"), "planner stopped");
        std::process::exit(1);
    }
}
