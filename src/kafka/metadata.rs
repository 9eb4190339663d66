//! Topic metadata: a topic's partitions loaded once from one metadata request, in a task of its
//! own every delivery to the topic waits for, and re-read to open partitions added later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::error::{Error as ClientError, ProtocolError};
use rskafka::client::partition::UnknownTopicHandling;
use tokio::sync::watch;

use super::KafkaError;
use super::partition::RoundRobin;
use super::producer::{KafkaProducer, PartitionProducer, TopicProducers};

/// How long loading a topic may take: one metadata request (retried within the produce timeout
/// on errors) and no I/O per partition. Deliveries waiting for a load time out on their own
/// deadline; a load that outlasts this fails, and the next delivery to the topic starts another.
pub(crate) const TOPIC_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a topic load ends with, shared by every delivery that waited for it.
pub(super) type LoadOutcome = Result<Arc<TopicProducers>, LoadFailure>;

/// Why a topic load failed, cloned for each delivery that waited for it.
#[derive(Debug, Clone)]
pub(super) enum LoadFailure {
    UnknownTopic,
    Client(Arc<ClientError>),
    TimedOut,
    Interrupted,
}

impl LoadFailure {
    fn into_error(self, topic: &str) -> KafkaError {
        let topic = topic.to_owned();
        match self {
            Self::UnknownTopic => KafkaError::UnknownTopic { topic },
            Self::Client(source) => KafkaError::Client {
                topic,
                partition: None,
                source,
            },
            Self::TimedOut => KafkaError::Timeout {
                topic,
                partition: -1,
                after: TOPIC_LOAD_TIMEOUT,
            },
            Self::Interrupted => KafkaError::Unavailable(format!("loading topic {topic} stopped")),
        }
    }
}

/// A topic load, run as a task of its own. However it ends (a panic or the runtime shutting
/// down included), the topic leaves `loads` and its waiters get an outcome, so the next
/// delivery to the topic can start another load.
struct TopicLoad {
    producer: KafkaProducer,
    topic: String,
    done: watch::Sender<Option<LoadOutcome>>,
}

impl TopicLoad {
    async fn run(self, client: Arc<Client>) {
        let outcome = self.producer.read_topic(&client, &self.topic).await;
        if let Err(failure) = &outcome {
            // Each delivery that waited logs its own failure.
            let error = failure.clone().into_error(&self.topic);
            tracing::debug!(topic = self.topic, %error, "cannot load topic");
        }
        self.finish(outcome);
    }

    /// Publishes the topic's producers and leaves `loads` (under its lock, see
    /// [`KafkaProducer::load_topic`]), then answers the waiters.
    fn finish(&self, outcome: LoadOutcome) {
        let inner = &self.producer.inner;
        let mut loads = inner.loads.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(producers) = &outcome {
            inner
                .topics
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.topic.clone(), Arc::clone(producers));
        }
        loads.remove(&self.topic);
        drop(loads);
        self.done.send_replace(Some(outcome));
    }
}

impl Drop for TopicLoad {
    fn drop(&mut self) {
        if self.done.borrow().is_none() {
            self.finish(Err(LoadFailure::Interrupted));
        }
    }
}

impl KafkaProducer {
    /// Re-reads partition counts; loaded topics that grew get producers for the new partitions.
    pub(super) async fn refresh_metadata(&self, client: &Arc<Client>) -> Result<(), ClientError> {
        let listed = client.list_topics().await?;
        self.touch();
        let counts: HashMap<String, usize> = listed
            .into_iter()
            .map(|t| (t.name, t.partitions.len()))
            .collect();
        let loaded: Vec<(String, usize)> = self
            .inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len()))
            .collect();
        for (topic, known) in loaded {
            let current = counts.get(&topic).copied().unwrap_or(0);
            if current > known {
                tracing::info!(topic, from = known, to = current, "partition count changed");
                if let Err(e) = self.load_topic(client, &topic, true).await {
                    tracing::warn!(topic, error = %e, "cannot open new partitions");
                }
            }
        }
        Ok(())
    }

    pub(super) async fn topic(
        &self,
        client: &Arc<Client>,
        topic: &str,
    ) -> Result<Arc<TopicProducers>, KafkaError> {
        if let Some(loaded) = self.loaded(topic) {
            return Ok(loaded);
        }
        // Boxed: only the first deliveries to a topic wait here, and the state of the wait
        // would otherwise be part of every delivery's produce future, moved onto the heap per
        // delivery.
        Box::pin(self.load_topic(client, topic, false)).await
    }

    /// Waits for `topic`'s producers, loading them in a task of their own unless a load is
    /// under way: every delivery that arrives meanwhile waits for the same load, and one that
    /// stops waiting (its deadline came) leaves the load running. `grow`: load even when the
    /// topic is loaded already (it has more partitions now).
    async fn load_topic(
        &self,
        client: &Arc<Client>,
        topic: &str,
        grow: bool,
    ) -> Result<Arc<TopicProducers>, KafkaError> {
        let mut outcome = {
            let mut loads = self.inner.loads.lock().unwrap_or_else(|e| e.into_inner());
            // A load publishes its topic and leaves `loads` under this lock, so a topic that is
            // neither loaded nor loading here has no load to wait for.
            match (loads.get(topic), self.loaded(topic)) {
                (Some(load), _) => load.clone(),
                (None, Some(loaded)) if !grow => return Ok(loaded),
                (None, _) => {
                    let (done, load) = watch::channel(None);
                    loads.insert(topic.to_owned(), load.clone());
                    let task = TopicLoad {
                        producer: self.clone(),
                        topic: topic.to_owned(),
                        done,
                    };
                    tokio::spawn(task.run(Arc::clone(client)));
                    load
                }
            }
        };
        // `TopicLoad` always sends before it drops its sender, so the wait cannot fail.
        let finished = outcome
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|outcome| outcome.clone());
        match finished {
            Some(Ok(producers)) => Ok(producers),
            Some(Err(failure)) => Err(failure.into_error(topic)),
            None => Err(LoadFailure::Interrupted.into_error(topic)),
        }
    }

    /// Reads the cluster's metadata once and makes a producer for each partition of `topic`
    /// it lists, keeping those already made.
    async fn read_topic(
        &self,
        client: &Client,
        topic: &str,
    ) -> Result<Arc<TopicProducers>, LoadFailure> {
        let clients = tokio::time::timeout(
            TOPIC_LOAD_TIMEOUT,
            client.partition_clients(topic, UnknownTopicHandling::Error),
        )
        .await
        .map_err(|_| LoadFailure::TimedOut)?
        .map_err(|e| match e {
            ClientError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            } => LoadFailure::UnknownTopic,
            e => LoadFailure::Client(Arc::new(e)),
        })?;
        self.touch();
        if clients.is_empty() {
            return Err(LoadFailure::UnknownTopic);
        }
        let mut partitions: Vec<Arc<PartitionProducer>> = match self.loaded(topic) {
            Some(existing) if existing.partitions.len() >= clients.len() => return Ok(existing),
            Some(existing) => existing.partitions.clone(),
            None => Vec::with_capacity(clients.len()),
        };
        for partition_client in clients.into_iter().skip(partitions.len()) {
            partitions.push(Arc::new(PartitionProducer::new(
                partition_client,
                &self.inner,
            )));
        }
        Ok(Arc::new(TopicProducers {
            partitions,
            unkeyed: RoundRobin::default(),
        }))
    }

    /// The producers of `topic`, if loaded.
    fn loaded(&self, topic: &str) -> Option<Arc<TopicProducers>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }

    /// The open partition count of `topic`, if loaded.
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.loaded(topic).map(|t| t.partitions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::error::tests::server_error;
    use rskafka::client::error::ProtocolError;

    #[test]
    fn a_failed_topic_load_is_told_to_each_waiter_with_no_partition_chosen() {
        assert!(matches!(
            LoadFailure::TimedOut.into_error("t"),
            KafkaError::Timeout { partition: -1, after, .. } if after == TOPIC_LOAD_TIMEOUT
        ));
        assert_eq!(
            LoadFailure::UnknownTopic.into_error("t").code(),
            "unknown_topic"
        );
        assert_eq!(
            LoadFailure::Interrupted.into_error("t").code(),
            "kafka_unavailable"
        );
        let client = LoadFailure::Client(server_error(ProtocolError::InvalidTopicException));
        assert_eq!(client.into_error("t").code(), "invalid_topic");
    }
}
