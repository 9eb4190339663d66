use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::{
    backoff::BackoffConfig,
    build_info::DEFAULT_CLIENT_ID,
    client::partition::PartitionClient,
    connection::{BrokerConnector, MetadataLookupMode, Timeouts, TlsConfig},
    protocol::primitives::Boolean,
    throttle::BrokerThrottles,
    topic::Topic,
};

pub mod consumer;
pub mod controller;
pub mod error;
pub(crate) mod idempotence;
pub(crate) mod metadata_cache;
pub mod partition;
pub mod producer;

use error::{Error, ProtocolError, RequestContext, Result};

use self::{controller::ControllerClient, partition::UnknownTopicHandling};

pub use crate::connection::{
    Credentials, KeepaliveConfig, OauthBearerCredentials, OauthCallback, SaslConfig,
};

#[derive(Debug, Error)]
pub enum ProduceError {
    #[error("Broker error: {0}")]
    BrokerError(#[from] crate::connection::Error),

    #[error("Request error: {0}")]
    RequestError(#[from] crate::messenger::RequestError),

    #[error("Got duplicate results for topic '{topic}' and partition {partition}")]
    DuplicateResult { topic: String, partition: i32 },

    #[error("No result for record {index}")]
    NoResult { index: usize },
}

/// Builder for [`Client`].
pub struct ClientBuilder {
    bootstrap_brokers: Vec<String>,
    client_id: Option<Arc<str>>,
    max_message_size: usize,
    socks5_proxy: Option<String>,
    tls_config: TlsConfig,
    sasl_config: Option<SaslConfig>,
    backoff_config: Arc<BackoffConfig>,
    timeouts: Timeouts,
}

impl ClientBuilder {
    /// Create a new [`ClientBuilder`] with the list of bootstrap brokers
    pub fn new(bootstrap_brokers: Vec<String>) -> Self {
        Self {
            bootstrap_brokers,
            client_id: None,
            max_message_size: 100 * 1024 * 1024, // 100MB
            socks5_proxy: None,
            tls_config: TlsConfig::default(),
            sasl_config: None,
            backoff_config: Default::default(),
            timeouts: Timeouts {
                connect: Some(Duration::from_secs(30)),
                request: None,
                keepalive: None,
            },
        }
    }

    /// Sets client ID.
    pub fn client_id(mut self, client_id: impl Into<Arc<str>>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Set maximum size (in bytes) of message frames that can be received from a broker.
    ///
    /// Setting this to larger sizes allows you to specify larger size limits in [`PartitionClient::fetch_records`],
    /// however it increases maximum memory consumption per broker connection. Settings this too small will result in
    /// failures all over the place since metadata requests cannot be handled any longer.
    pub fn max_message_size(mut self, max_message_size: usize) -> Self {
        self.max_message_size = max_message_size;
        self
    }

    /// Set up backoff configuration
    pub fn backoff_config(mut self, backoff_config: BackoffConfig) -> Self {
        self.backoff_config = Arc::from(backoff_config);
        self
    }

    /// Use SOCKS5 proxy.
    #[cfg(feature = "transport-socks5")]
    pub fn socks5_proxy(mut self, proxy: String) -> Self {
        self.socks5_proxy = Some(proxy);
        self
    }

    /// Setup TLS.
    #[cfg(feature = "transport-tls")]
    pub fn tls_config(mut self, tls_config: Arc<rustls::ClientConfig>) -> Self {
        self.tls_config = Some(tls_config);
        self
    }

    /// Setup SASL username and password. Mechanism is assumed to be PLAIN.
    pub fn sasl_config(mut self, sasl_config: SaslConfig) -> Self {
        self.sasl_config = Some(sasl_config);
        self
    }

    /// Set the timeout on establishing connections to the broker (TCP and TLS).
    /// By setting this to `None`, connection attempts will never time out unless
    /// interrupted by an external event.
    /// The default timeout is 30 seconds.
    pub fn connect_timeout(mut self, connect_timeout: Option<Duration>) -> Self {
        self.timeouts.connect = connect_timeout;
        self
    }

    /// Set the timeout on requests to the broker, from the send to the answer. A request
    /// that times out closes its connection: the other requests on it fail at once and the
    /// connection is replaced.
    /// By setting this to `None`, requests will never time out unless
    /// interrupted by an external event.
    /// The default timeout is `None`.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeouts.request = timeout;
        self
    }

    /// Set keepalive configuration.
    ///
    /// The default is to not set any keepalive configuration.
    pub fn keepalive_config(mut self, keepalive_config: KeepaliveConfig) -> Self {
        self.timeouts.keepalive = Some(keepalive_config);
        self
    }

    /// Build [`Client`].
    pub async fn build(self) -> Result<Client> {
        let brokers = Arc::new(BrokerConnector::new(
            self.bootstrap_brokers,
            self.client_id
                .unwrap_or_else(|| Arc::from(DEFAULT_CLIENT_ID)),
            self.tls_config,
            self.socks5_proxy,
            self.sasl_config,
            self.max_message_size,
            Arc::clone(&self.backoff_config),
            self.timeouts,
        ));
        brokers.refresh_metadata().await?;

        Ok(Client {
            brokers,
            backoff_config: self.backoff_config,
            throttles: Arc::default(),
            producer_ids: None,
        })
    }
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder").finish_non_exhaustive()
    }
}

/// Top-level cluster-wide client.
///
/// This client can be used to query some cluster-wide metadata and construct task-specific sub-clients like
/// [`ControllerClient`] and [`PartitionClient`].
///
/// Must be constructed using [`ClientBuilder`].
#[derive(Debug)]
pub struct Client {
    brokers: Arc<BrokerConnector>,
    backoff_config: Arc<BackoffConfig>,
    /// When each broker takes this client's next request (patched, see PATCHED.md).
    throttles: Arc<BrokerThrottles>,
    /// The idempotent producer's id, once [`Client::enable_idempotence`] obtained it (patched,
    /// see PATCHED.md).
    producer_ids: Option<Arc<idempotence::ProducerIds>>,
}

impl Client {
    /// Makes this client an idempotent producer: asks a broker for a producer id
    /// (InitProducerId), which every record batch of the partition clients made afterwards
    /// carries, with its epoch and a sequence number per partition, so a produce request sent
    /// again after its answer was lost is not appended twice (KIP-98). Fails when the broker
    /// refuses (it lacks the API, or the client the `IDEMPOTENT_WRITE` permission).
    ///
    /// Patched (see PATCHED.md).
    pub async fn enable_idempotence(&mut self) -> Result<()> {
        let ids = idempotence::ProducerIds::init(
            Arc::clone(&self.brokers),
            Arc::clone(&self.backoff_config),
        )
        .await?;
        self.producer_ids = Some(Arc::new(ids));
        Ok(())
    }

    /// Returns a client for performing certain cluster-wide operations.
    pub fn controller_client(&self) -> Result<ControllerClient> {
        Ok(ControllerClient::new(
            Arc::clone(&self.brokers),
            Arc::clone(&self.backoff_config),
        ))
    }

    /// Returns a client for performing operations on a specific partition
    pub async fn partition_client(
        &self,
        topic: impl Into<String> + Send,
        partition: i32,
        unknown_topic_handling: UnknownTopicHandling,
    ) -> Result<PartitionClient> {
        PartitionClient::new(
            topic.into(),
            partition,
            Arc::clone(&self.brokers),
            unknown_topic_handling,
            Arc::clone(&self.backoff_config),
            Arc::clone(&self.throttles),
            self.producer_ids.clone(),
        )
        .await
    }

    /// A client for each partition of `topic`, in partition order, from one metadata request.
    ///
    /// Patched (see PATCHED.md): a client from [`Self::partition_client`] reads the whole topic's
    /// metadata from its leader before it is returned, so a topic of thousands of partitions took
    /// thousands of metadata requests, each answered with every partition. These clients take
    /// their leaders from this one answer and connect on first use. The request asks for every
    /// topic, as [`Self::list_topics`] does, because a broker may create a topic that a metadata
    /// request names (`auto.create.topics.enable`): an unknown topic is an error, never created.
    pub async fn partition_clients(
        &self,
        topic: &str,
        unknown_topic_handling: UnknownTopicHandling,
    ) -> Result<Vec<PartitionClient>> {
        let (response, _gen) = self
            .brokers
            .request_metadata(&MetadataLookupMode::ArbitraryBroker, None)
            .await?;
        let found = response
            .topics
            .into_iter()
            .find(|t| t.name.0 == topic)
            .ok_or_else(|| Error::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                error_message: None,
                request: RequestContext::Topic(topic.to_owned()),
                response: None,
                is_virtual: true,
            })?;
        if let Some(protocol_error) = found.error {
            return Err(Error::ServerError {
                protocol_error,
                error_message: None,
                request: RequestContext::Topic(topic.to_owned()),
                response: None,
                is_virtual: false,
            });
        }
        // Each partition's leader; `Some(None)`: listed without a usable leader now, so its
        // client looks the leader up on first use.
        let mut leaders: Vec<Option<Option<i32>>> = vec![None; found.partitions.len()];
        for partition in &found.partitions {
            let index = partition.partition_index.0;
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| leaders.get_mut(i))
                .ok_or_else(|| {
                    Error::InvalidResponse(format!(
                        "partition {index} of topic \"{topic}\" is out of its range"
                    ))
                })?;
            let leader = partition.leader_id.0;
            *slot = Some((partition.error.is_none() && leader >= 0).then_some(leader));
        }
        leaders
            .into_iter()
            .enumerate()
            .map(|(index, leader)| {
                let leader = leader.ok_or_else(|| {
                    Error::InvalidResponse(format!(
                        "no metadata for partition {index} of topic \"{topic}\""
                    ))
                })?;
                Ok(PartitionClient::with_leader(
                    topic.to_owned(),
                    index as i32,
                    leader,
                    Arc::clone(&self.brokers),
                    unknown_topic_handling,
                    Arc::clone(&self.backoff_config),
                    Arc::clone(&self.throttles),
                    self.producer_ids.clone(),
                ))
            })
            .collect()
    }

    /// Returns a list of topics in the cluster
    pub async fn list_topics(&self) -> Result<Vec<Topic>> {
        // Do not used a cached metadata response to satisfy this request, in
        // order to prevent:
        //
        //  * Client creates a topic
        //  * Client calls list_topics() and does not see new topic
        //
        // Because this is an unconstrained metadata request (all topics) it
        // will update the cached metadata entry.
        let (response, _gen) = self
            .brokers
            .request_metadata(&MetadataLookupMode::ArbitraryBroker, None)
            .await?;

        Ok(response
            .topics
            .into_iter()
            .filter(|t| !matches!(t.is_internal, Some(Boolean(true))))
            .map(|t| Topic {
                name: t.name.0,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| p.partition_index.0)
                    .collect(),
            })
            .collect())
    }
}
