//! A scripted in-memory producer behind the bridge's `Produce` seam: the handler tier runs the
//! whole pipeline (tokens, envelope, mapping, encoding, dead letters, the service around it)
//! without a broker, and makes Kafka answer exactly as a test needs: ack, refuse for good,
//! fail retriably, take its time, hang, or panic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pubsub_kafka_bridge::kafka::{Ack, KafkaError, Produce};
use pubsub_kafka_bridge::limits::InflightPermit;
use pubsub_kafka_bridge::record::KafkaRecord;
use rskafka::client::error::{Error as ClientError, ProtocolError, RequestContext};
use rskafka::client::producer::Error as ProducerError;

/// What the producer does with the next record.
#[derive(Debug, Clone)]
pub enum Step {
    /// Acknowledge it (offsets count up per topic, partition 0).
    Ack,
    /// Acknowledge it after a pause.
    AckAfter(Duration),
    /// A retriable broker error (the delivery answers 503).
    Retriable,
    /// A permanent refusal, as for a record larger than `message.max.bytes` (422 / dead letter).
    TooLarge,
    /// Never answer (a stalled broker); the caller's future must be dropped or time out.
    Hang,
    /// Panic inside the produce call (a bug in the pipeline).
    Panic,
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Step>>,
    produced: Mutex<Vec<(String, KafkaRecord)>>,
    offsets: Mutex<std::collections::HashMap<String, i64>>,
    unreachable: AtomicBool,
    calls: AtomicU64,
}

/// The scripted producer; clones share one script and one record log.
#[derive(Clone, Default)]
pub struct ScriptedProducer {
    state: Arc<State>,
}

impl ScriptedProducer {
    /// A producer that acknowledges everything until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues what the next produce calls do, in order; after the script runs out: [`Step::Ack`].
    pub fn then(&self, steps: impl IntoIterator<Item = Step>) -> &Self {
        self.state.script.lock().unwrap().extend(steps);
        self
    }

    /// Readiness: whether the "cluster" counts as reached.
    pub fn set_reachable(&self, reachable: bool) {
        self.state.unreachable.store(!reachable, Ordering::SeqCst);
    }

    /// Every acknowledged record with its topic, in acknowledgement order.
    pub fn produced(&self) -> Vec<(String, KafkaRecord)> {
        self.state.produced.lock().unwrap().clone()
    }

    /// Produce calls made, acknowledged or not.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }
}

impl Produce for ScriptedProducer {
    fn produce(
        &self,
        topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send {
        let state = Arc::clone(&self.state);
        let topic = topic.to_owned();
        async move {
            state.calls.fetch_add(1, Ordering::SeqCst);
            let step = state
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Ack);
            // Real rskafka errors, classified by the bridge as a broker's answer would be.
            let refused = |source| KafkaError::Producer {
                topic: topic.clone(),
                partition: 0,
                source,
            };
            let broker = |protocol_error| {
                ProducerError::Client(Arc::new(ClientError::ServerError {
                    protocol_error,
                    error_message: None,
                    request: RequestContext::Topic(topic.clone()),
                    response: None,
                    is_virtual: false,
                }))
            };
            match step {
                Step::Ack => {}
                Step::AckAfter(pause) => tokio::time::sleep(pause).await,
                Step::Retriable => return Err(refused(broker(ProtocolError::NotLeaderOrFollower))),
                Step::TooLarge => return Err(refused(broker(ProtocolError::MessageTooLarge))),
                Step::Hang => std::future::pending::<()>().await,
                Step::Panic => panic!("scripted panic in produce"),
            }
            drop(hold);
            let offset = {
                let mut offsets = state.offsets.lock().unwrap();
                let next = offsets.entry(topic.clone()).or_insert(0);
                *next += 1;
                *next - 1
            };
            state.produced.lock().unwrap().push((topic, record));
            Ok(Ack {
                partition: 0,
                offset,
            })
        }
    }

    fn reached_within(&self, _window: Duration) -> bool {
        !self.state.unreachable.load(Ordering::SeqCst)
    }

    fn produced(&self) -> (u64, u64) {
        let records = self.state.produced.lock().unwrap().len() as u64;
        (records, records)
    }
}
