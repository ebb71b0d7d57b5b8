//! The health-watcher's configuration: flags, environment variables and
//! defaults, validated before anything starts.

use std::time::Duration;

use clap::Parser;

use crate::Error;

/// Everything the health-watcher needs to know at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mentat-health-watcher",
    version,
    about = "Probes every running replica's readiness endpoint and reports when one becomes healthy or unhealthy."
)]
pub struct Config {
    /// NATS server to connect to; several URLs separated by commas for a
    /// cluster (the watcher moves to another when the one it uses goes away).
    #[arg(long, env = "MENTAT_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Copies JetStream keeps of each of Mentat's streams: `auto` (3 when
    /// the NATS cluster announces three or more servers, else 1; streams
    /// that exist are left as they are) or 1 to 5 (streams that exist are
    /// updated to it). Give every service the same value.
    #[arg(long, env = "MENTAT_STREAM_REPLICAS", default_value = "auto")]
    pub stream_replicas: mentat_bus::Replicas,
    /// Credentials for NATS, or `--insecure`.
    #[command(flatten)]
    pub access: mentat_runtime::NatsAccess,
    /// Where `/metrics` is served, if anywhere.
    #[command(flatten)]
    pub admin: mentat_runtime::metrics::AdminListen,

    /// Milliseconds a probe may take (connect, send, read the status line)
    /// before it counts as a failure.
    #[arg(
        long = "probe-timeout-ms",
        env = "MENTAT_PROBE_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub probe_timeout_ms: u64,

    /// Verdicts (threshold facts) waiting to be published; when full, the
    /// judging task waits.
    #[arg(
        long = "verdict-queue",
        env = "MENTAT_VERDICT_QUEUE",
        default_value_t = 256
    )]
    pub verdict_queue: usize,

    /// Idle-probe answers waiting to be counted; when full, answers are dropped.
    #[arg(
        long = "probe-answer-queue",
        env = "MENTAT_PROBE_ANSWER_QUEUE",
        default_value_t = 1024
    )]
    pub probe_answer_queue: usize,
}

impl Config {
    /// A configuration with every default, talking to `nats`.
    pub fn new(nats: impl Into<String>) -> Self {
        Self {
            nats: nats.into(),
            stream_replicas: mentat_bus::Replicas::Auto,
            access: mentat_runtime::NatsAccess::default(),
            admin: Default::default(),
            probe_timeout_ms: 1000,
            verdict_queue: 256,
            probe_answer_queue: 1024,
        }
    }

    /// Check every value; the error names the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        if let Err(e) = mentat_bus::client::server_addrs(&self.nats) {
            return Err(Error::Config {
                field: "nats",
                message: format!("must name one NATS server or several separated by commas: {e}"),
            });
        }
        if self.probe_timeout_ms == 0 {
            return Err(Error::Config {
                field: "probe-timeout-ms",
                message: "must be at least 1".into(),
            });
        }
        for (field, value) in [
            ("verdict-queue", self.verdict_queue),
            ("probe-answer-queue", self.probe_answer_queue),
        ] {
            if value == 0 {
                return Err(Error::Config {
                    field,
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }

    /// The judging task's queue capacities.
    pub fn queues(&self) -> crate::verdicts::Queues {
        crate::verdicts::Queues {
            verdicts: self.verdict_queue,
            probe_answers: self.probe_answer_queue,
        }
    }

    /// The probe timeout as a duration.
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = Config::try_parse_from(["mentat-health-watcher"]).expect("parse");
        assert_eq!(c.probe_timeout(), Duration::from_secs(1));
        assert!(c.validate().is_ok());
        let mut c = Config::new("nats://x");
        c.probe_timeout_ms = 0;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "probe-timeout-ms",
                ..
            })
        ));
    }
}
