//! The events of the log as the planner's relay publishes them to
//! `MENTAT_EVENTS`, gathered by an ordered consumer: how the suite sees
//! which step a deployment has reached, even while the planner is down.

use std::sync::{Arc, Mutex};

use async_nats::jetstream::consumer::DeliverPolicy;
use mentat_bus::{codec, consumer, streams, Bus, Encoding};
use mentat_domain::{Event, EventEnvelope};

/// Every event published so far, in log order.
pub struct Watch {
    events: Arc<Mutex<Vec<EventEnvelope>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Start reading `MENTAT_EVENTS` from its first message.
    pub fn start(bus: Bus) -> Watch {
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let events = events.clone();
            async move {
                let mut next_seq = 1;
                loop {
                    let deliver = DeliverPolicy::ByStartSequence {
                        start_sequence: next_seq,
                    };
                    let Ok(mut replay) =
                        consumer::ordered(&bus, streams::EVENTS, Vec::new(), deliver).await
                    else {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    };
                    // `None`: the connection was re-established; open anew.
                    while let Some(Ok(msg)) = replay.next().await {
                        if let Ok(info) = msg.info() {
                            next_seq = info.stream_sequence + 1;
                        }
                        let encoding = Encoding::of(msg.headers.as_ref());
                        if let Ok(env) =
                            codec::decode::<EventEnvelope>(&msg.payload, encoding, "EventEnvelope")
                        {
                            events.lock().unwrap_or_else(|p| p.into_inner()).push(env);
                        }
                    }
                }
            }
        });
        Watch { events, task }
    }

    /// The events of deployment `id`: from its `DeploymentStarted` on, every
    /// event of its service's stream (facts included).
    pub fn deployment(&self, id: &str) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let Some(start) = events.iter().position(|e| {
            matches!(&e.event, Event::DeploymentStarted { deployment_id, .. } if deployment_id == id)
        }) else {
            return Vec::new();
        };
        let stream = events[start].stream.clone();
        events[start..]
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| e.event.clone())
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
