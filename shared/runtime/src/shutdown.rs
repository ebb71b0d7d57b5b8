//! The shutdown tree: a root [`CancellationToken`] cancelled by the first
//! SIGTERM or Ctrl-C; a second signal exits the process at once.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// The root of a process's cancellation tree.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A tree that nothing cancels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree whose root is cancelled by SIGTERM or SIGINT. A second signal
    /// exits with status 130.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; draining (a second signal exits at once)");
            token.cancel();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
        shutdown
    }

    /// The root token.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A child token: cancelled with the root, or on its own.
    pub fn child(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// Cancel the whole tree.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the tree is cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C through tokio's portable path.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Run `fut` but give up after `grace`, returning `None` then.
pub async fn with_grace<F: std::future::Future>(grace: Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(grace, fut).await.ok()
}
