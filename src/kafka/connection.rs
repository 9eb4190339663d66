//! The connection to the cluster: how it is made, and the background task that makes it, keeps
//! it and re-reads metadata for as long as the producer lives.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder, KeepaliveConfig};

use super::producer::{Inner, KafkaProducer};
use super::settings::KafkaConfig;
use super::{secret, security};

/// TCP keepalive on broker connections: an idle connection whose peer vanished (a NAT flow
/// dropped, a VM paused) is found dead after 60 s + 3 × 10 s instead of at its next request,
/// and the probes keep NAT mappings alive (Cloud NAT drops an established TCP flow idle for
/// 1200 s by default, `tcpEstablishedIdleTimeoutSec`).
const KEEPALIVE: KeepaliveConfig = KeepaliveConfig {
    time: Some(Duration::from_secs(60)),
    interval: Some(Duration::from_secs(10)),
    retries: Some(3),
};

/// Connects to the cluster with the configured security: what the producer does at startup
/// and what `pubsub-kafka-bridge check` tries.
///
/// Every step has a deadline: connecting (TCP and TLS) and each request (ApiVersions, SASL,
/// metadata, produce) end after `KAFKA_REQUEST_TIMEOUT_MS`, like the Java client's
/// `request.timeout.ms`; a request that times out closes its connection, which is replaced.
pub(crate) async fn connect(config: &KafkaConfig) -> Result<Client, String> {
    let mut builder = ClientBuilder::new(config.bootstrap_servers.clone())
        .client_id(config.client_id.as_str())
        .connect_timeout(Some(config.request_timeout))
        .timeout(Some(config.request_timeout))
        .keepalive_config(KEEPALIVE)
        // rskafka retries forever by default; a delivery must get an answer before
        // Pub/Sub's ack deadline, so retries end with the produce timeout.
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.,
            deadline: Some(config.produce_timeout),
        });
    let mut security = config.security.clone();
    if let Some((endpoint, name)) = &config.security.password_secret {
        let password = secret::access(endpoint, name, &config.security.metadata_host).await?;
        security.set_password(password);
    }
    builder = security::apply(builder, &security).map_err(|e| e.to_string())?;
    let mut client = builder.build().await.map_err(|e| e.to_string())?;
    if config.idempotence {
        client.enable_idempotence().await.map_err(|e| {
            format!(
                "no producer id for the idempotent producer (KAFKA_IDEMPOTENCE=true): {e}; \
                 a broker that refuses it (no InitProducerId, or no IDEMPOTENT_WRITE \
                 permission) needs KAFKA_IDEMPOTENCE=false"
            )
        })?;
    }
    Ok(client)
}

impl KafkaProducer {
    /// Runs the connection task, and runs it again after a panic: deliveries depend on it
    /// (the first connection, metadata refresh), so it must not silently stay dead.
    pub(super) async fn supervise(inner: Weak<Inner>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let task = tokio::spawn(Self::maintain(Weak::clone(&inner)));
            let Err(e) = task.await else {
                return; // the producer is gone
            };
            let Some(alive) = inner.upgrade() else { return };
            if !e.is_panic() {
                return; // the runtime is shutting down
            }
            alive.connection_task_alive.store(false, Ordering::Relaxed);
            tracing::error!(restart_in = ?backoff, "the Kafka connection task panicked");
            drop(alive);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Connects (retrying with backoff), loads the configured topics, then re-reads metadata
    /// until the producer is dropped.
    ///
    /// The task owns only a weak handle and holds a strong one just while it works, so it ends
    /// (and with it the connections) at its next step after the last producer handle is gone.
    async fn maintain(inner: Weak<Inner>) {
        let upgrade = || inner.upgrade().map(|inner| Self { inner });
        if let Some(producer) = upgrade() {
            producer
                .inner
                .connection_task_alive
                .store(true, Ordering::Relaxed);
        }
        let mut backoff = Duration::from_millis(100);
        let (producer, client) = loop {
            let Some(producer) = upgrade() else { return };
            match producer.connect().await {
                Ok(client) => break (producer, Arc::new(client)),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach Kafka");
                    drop(producer);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(brokers = ?producer.inner.config.bootstrap_servers, "connected to Kafka");
        producer.touch();
        producer
            .inner
            .client
            .send_replace(Some(Arc::clone(&client)));
        for topic in producer.inner.config.preload_topics.clone() {
            if let Err(e) = producer.topic(&client, &topic).await {
                tracing::warn!(topic, error = %e, "topic not ready yet");
            }
        }
        let mut interval = tokio::time::interval(producer.inner.config.metadata_refresh);
        drop(producer);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(producer) = upgrade() else { return };
            if let Err(e) = producer.refresh_metadata(&client).await {
                tracing::warn!(error = %e, "Kafka metadata refresh failed");
            }
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        connect(&self.inner.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_connection_task_ends_with_its_producer() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let unreachable = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().to_string()
        };
        let vars: std::collections::HashMap<String, String> = [
            ("KAFKA_BOOTSTRAP_SERVERS", unreachable.as_str()),
            ("KAFKA_TOPIC", "t"),
            ("OIDC_DISABLED", "true"),
            ("KAFKA_PRODUCE_TIMEOUT_MS", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = crate::Config::from_map(&vars).unwrap();
        let producer = KafkaProducer::start(config.kafka);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(tasks() > before, "retrying to connect in the background");
        drop(producer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tasks() > before {
            assert!(
                Instant::now() < deadline,
                "the background task outlived its producer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
