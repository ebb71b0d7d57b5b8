//! `mentat-demo-app`: a small HTTP server for demos and tests that
//! misbehaves according to its version string.
//!
//! - [`behaviour`]: settings from `PORT`, `APP_VERSION` / `--version`,
//!   `ERROR_RATE`, `SLOW_MS`, `READY_DELAY_MS`, `SHUTDOWN_GRACE_MS`, and
//!   what each version does.
//! - [`server`]: `GET /`, `GET /health`, graceful shutdown on SIGTERM.
//!
//! Exit status: 0 after a clean shutdown, 1 for a `crash` version or a
//! failure to listen, 2 for bad configuration.

mod behaviour;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use behaviour::Settings;

fn main() {
    let settings = match Settings::from_sources(std::env::args().skip(1), |k| std::env::var(k).ok())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mentat-demo-app: bad configuration: {e}");
            std::process::exit(2);
        }
    };
    if settings.behaviour.crash {
        eprintln!(
            "mentat-demo-app: version `{}` contains \"crash\": exiting with status 1",
            settings.version
        );
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mentat-demo-app: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(settings)) {
        eprintln!("mentat-demo-app: {e}");
        std::process::exit(1);
    }
}

async fn run(settings: Settings) -> std::io::Result<()> {
    let addr = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    eprintln!(
        "mentat-demo-app: version {} listening on http://{addr}",
        settings.version
    );
    let app = Arc::new(server::App::new(settings));
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    server::serve(listener, app, stop).await;
    eprintln!("mentat-demo-app: stopped");
    Ok(())
}
