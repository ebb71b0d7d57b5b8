//! Constant load through the router, every answer kept with the time it
//! came, so that failures can be placed before, during and after the
//! router's own downtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::TcpStream;

/// Time between two requests: 200 requests per second, one keep-alive
/// connection, one request at a time.
const PERIOD: Duration = Duration::from_millis(5);

/// Longest wait for one answer; past it the request counts as failed and
/// the connection is dropped, so a hung request shows as a failure instead
/// of silence.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// One answer (status 0: none at all).
#[derive(Debug, Clone)]
pub struct Answer {
    /// When it was read, or the request failed.
    pub at: Instant,
    /// HTTP status; 0 when there was no answer.
    pub status: u16,
    /// The body of a 200 (the version), else what went wrong.
    pub body: String,
}

/// A running load, on a thread and a runtime of its own: a test that
/// blocks its own runtime's workers (waiting synchronously for a process,
/// say) must not stop the load, or hold a woken request in a blocked
/// worker's queue, which once showed as a scenario with no answer at all.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Traffic {
    /// Start sending `GET /` for `host` to the router at `addr`.
    pub fn start(addr: String, host: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let host = host.to_owned();
        let load = {
            let (stop, answers) = (stop.clone(), answers.clone());
            async move {
                let mut tick = tokio::time::interval(PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let attempt = async {
                        match conn.as_mut() {
                            Some(c) => crate::load::request(c, &host).await,
                            None => match TcpStream::connect(&addr).await {
                                Ok(s) => {
                                    let c = conn.insert(BufReader::new(s));
                                    crate::load::request(c, &host).await
                                }
                                Err(e) => Err(format!("connect: {e}")),
                            },
                        }
                    };
                    let result = tokio::time::timeout(ANSWER_WITHIN, attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no answer within {}s", ANSWER_WITHIN.as_secs()))
                        });
                    let answer = match result {
                        Ok((status, body, keep)) => {
                            if !keep {
                                conn = None;
                            }
                            Answer {
                                at: Instant::now(),
                                status,
                                body: body.trim().to_owned(),
                            }
                        }
                        Err(e) => {
                            conn = None;
                            Answer {
                                at: Instant::now(),
                                status: 0,
                                body: e,
                            }
                        }
                    };
                    answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(answer);
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("chaos-load".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the load");
                runtime.block_on(load);
            })
            .expect("a thread for the load");
        Traffic {
            stop,
            answers,
            thread,
        }
    }

    /// Whether some request was answered 200 with `version`.
    pub fn saw(&self, version: &str) -> bool {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|a| a.status == 200 && a.body == version)
    }

    /// Stop; every answer, in order.
    pub async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.clone()
    }
}
