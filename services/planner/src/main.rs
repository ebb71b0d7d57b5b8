//! `mentat-planner`: parse flags, set up tracing and signals, run.

use mentat_runtime::{secrets, EXIT_CONFIG};

#[tokio::main]
async fn main() {
    // Before anything else: a password in `ps` is already out.
    let flags = [
        ("--database-url", "MENTAT_DATABASE_URL"),
        ("--migrate-url", "MENTAT_MIGRATE_URL"),
    ];
    for (flag, env) in flags {
        if secrets::password_on_command_line(std::env::args_os(), &[flag]).is_some() {
            eprintln!(
                "mentat-planner: {}",
                secrets::password_on_command_line_error(flag, env)
            );
            std::process::exit(EXIT_CONFIG);
        }
    }
    let mut config: mentat_planner::Config = mentat_runtime::parse_flags();
    if let Err(e) = config.read_url_files() {
        eprintln!("mentat-planner: {e}");
        std::process::exit(EXIT_CONFIG);
    }
    mentat_runtime::telemetry::init("planner");
    let shutdown = mentat_runtime::Shutdown::on_signals();
    if let Err(e) = mentat_planner::run(config, shutdown).await {
        tracing::error!(error = format!("{e:#}"), "planner stopped");
        std::process::exit(1);
    }
}
