//! Confluent Schema Registry: registers a schema under `<topic>-value` once per topic and
//! schema (the bundled Avro schema of the `avro` format, or each Pub/Sub schema revision of
//! `pubsub-schema`) and hands out its id for the Confluent wire format (`0x00`, 4-byte id, ...).

pub(crate) mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

use crate::encode::AVRO_SCHEMA;

/// A registration that takes longer fails; the delivery answers 503 and is retried.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The registry could not give a schema id. Retriable: the delivery answers 503.
#[derive(Debug, thiserror::Error)]
#[error("schema registry: registering {subject}: {reason}")]
pub struct RegistryError {
    /// The subject (`<topic>-value`).
    pub(crate) subject: String,
    /// What went wrong.
    pub(crate) reason: String,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

/// A registration's outcome as its waiters see it (`None` while it runs).
type Outcome = Option<Result<u32, String>>;

/// The key of the bundled Avro schema among a topic's schemas (revision keys hold an `@`).
const BUNDLED: &str = "";

/// Where a topic's schema id stands.
enum Slot {
    /// Registered: the id, for good.
    Known(u32),
    /// One registration runs; every delivery for the topic waits on it and shares its outcome.
    Registering(tokio::sync::watch::Receiver<Outcome>),
}

/// The `Authorization` value of HTTP basic auth (Confluent Cloud: API key and secret).
pub(crate) fn basic_authorization(user: &str, password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.inner.base)
            .finish_non_exhaustive()
    }
}

/// Registers the schema per topic and caches the ids.
///
/// One registration per topic at a time, run in its own task and shared by every delivery
/// waiting for that topic; the map is locked only to look up or update a slot, never across
/// I/O, so a slow registry holds up only the deliveries that need its answer, all at once.
#[derive(Clone)]
pub(crate) struct SchemaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    authorization: Option<String>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Topic, then schema (the bundled one or a revision `projects/P/schemas/S@REV`).
    slots: Mutex<HashMap<String, HashMap<String, Slot>>>,
}

impl SchemaRegistry {
    /// A client for `url` (`SCHEMA_REGISTRY_URL`), with basic auth when credentials are given.
    pub(crate) fn new(url: &str, credentials: Option<(&str, &str)>) -> Self {
        let inner = Inner {
            base: url.trim_end_matches('/').to_owned(),
            authorization: credentials.map(|(user, password)| basic_authorization(user, password)),
            client: crate::fetch::https_client(),
            slots: Mutex::new(HashMap::new()),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The id of the bundled Avro schema under `topic`'s value subject, registering it on first
    /// use.
    ///
    /// Registering an identical schema again returns the existing id, so this is idempotent
    /// across instances and restarts. A failed registration is forgotten: the next delivery
    /// for the topic starts a new one.
    pub(crate) async fn schema_id(&self, topic: &str) -> Result<u32, RegistryError> {
        self.id_for(topic, BUNDLED, AVRO_SCHEMA, "AVRO").await
    }

    /// The id of a Pub/Sub schema revision (`projects/P/schemas/S@REV`, whose `definition` is
    /// of `schema_type`, `AVRO` or `PROTOBUF`) under `topic`'s value subject: registered once
    /// per topic and revision, like [`SchemaRegistry::schema_id`].
    pub(crate) async fn revision_id(
        &self,
        topic: &str,
        revision: &str,
        definition: &str,
        schema_type: &'static str,
    ) -> Result<u32, RegistryError> {
        self.id_for(topic, revision, definition, schema_type).await
    }

    async fn id_for(
        &self,
        topic: &str,
        key: &str,
        definition: &str,
        schema_type: &'static str,
    ) -> Result<u32, RegistryError> {
        let mut outcome = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(topic).and_then(|schemas| schemas.get(key)) {
                Some(Slot::Known(id)) => return Ok(*id),
                Some(Slot::Registering(outcome)) => outcome.clone(),
                None => {
                    let (report, outcome) = tokio::sync::watch::channel(None);
                    slots
                        .entry(topic.to_owned())
                        .or_default()
                        .insert(key.to_owned(), Slot::Registering(outcome.clone()));
                    let registry = self.clone();
                    let (topic, key, definition) =
                        (topic.to_owned(), key.to_owned(), definition.to_owned());
                    tokio::spawn(async move {
                        let result = registry
                            .inner
                            .register(&topic, &definition, schema_type)
                            .await;
                        let mut slots = registry
                            .inner
                            .slots
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        let schemas = slots.entry(topic).or_default();
                        match result {
                            Ok(id) => schemas.insert(key, Slot::Known(id)),
                            Err(_) => schemas.remove(&key),
                        };
                        drop(slots);
                        report.send_replace(Some(result));
                    });
                    outcome
                }
            }
        };
        let shared = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
        match shared {
            Ok(Some(Ok(id))) => Ok(id),
            Ok(Some(Err(reason))) => Err(RegistryError {
                subject: format!("{topic}-value"),
                reason,
            }),
            // The registration task ended without reporting (runtime shutting down).
            _ => Err(RegistryError {
                subject: format!("{topic}-value"),
                reason: "registration abandoned".to_owned(),
            }),
        }
    }
}

impl Inner {
    /// Registers `definition` (of `schema_type`) under `<topic>-value`; the error is the reason.
    async fn register(
        &self,
        topic: &str,
        definition: &str,
        schema_type: &'static str,
    ) -> Result<u32, String> {
        let subject = format!("{topic}-value");
        let body =
            serde_json::json!({ "schemaType": schema_type, "schema": definition }).to_string();
        let mut request = http::Request::post(format!("{}/subjects/{subject}/versions", self.base))
            .header(
                http::header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            )
            .header(
                http::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json",
            );
        if let Some(authorization) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let (_, answer) = crate::fetch::send(&self.client, request, 64 * 1024, TIMEOUT).await?;
        let registered: Registered = serde_json::from_slice(&answer).map_err(|e| {
            format!(
                "unexpected answer: {}",
                crate::echo::bounded_echo(&e.to_string())
            )
        })?;
        tracing::info!(
            subject,
            schema_type,
            id = registered.id,
            "schema registered"
        );
        Ok(registered.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc_7617() {
        // RFC 7617 section 2's example.
        assert_eq!(
            basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
