//! Confluent Schema Registry: registers the bundled Avro schema under `<topic>-value` once per
//! topic and hands out its id for the Confluent wire format (`0x00`, 4-byte id, datum).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::encode::AVRO_SCHEMA;

/// A registration that takes longer fails; the delivery answers 503 and is retried.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The registry could not give a schema id. Retriable: the delivery answers 503.
#[derive(Debug, thiserror::Error)]
#[error("schema registry: registering {subject}: {reason}")]
pub struct RegistryError {
    /// The subject (`<topic>-value`).
    pub subject: String,
    /// What went wrong.
    pub reason: String,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

/// Registers the schema per topic and caches the ids.
pub struct SchemaRegistry {
    base: String,
    authorization: Option<String>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    ids: tokio::sync::Mutex<HashMap<String, u32>>,
}

impl SchemaRegistry {
    /// A client for `url` (`SCHEMA_REGISTRY_URL`), with basic auth when credentials are given.
    pub fn new(url: &str, credentials: Option<(&str, &str)>) -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        SchemaRegistry {
            base: url.trim_end_matches('/').to_owned(),
            authorization: credentials.map(|(user, password)| {
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {pair}")
            }),
            client: Client::builder(TokioExecutor::new()).build(https),
            ids: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The schema id for `topic`'s value subject, registering the schema on first use.
    ///
    /// Registering an identical schema again returns the existing id, so this is idempotent
    /// across instances and restarts.
    pub async fn schema_id(&self, topic: &str) -> Result<u32, RegistryError> {
        let mut ids = self.ids.lock().await;
        if let Some(id) = ids.get(topic) {
            return Ok(*id);
        }
        let subject = format!("{topic}-value");
        let error = |reason: String| RegistryError {
            subject: subject.clone(),
            reason,
        };
        let body = serde_json::json!({ "schemaType": "AVRO", "schema": AVRO_SCHEMA }).to_string();
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
            .map_err(|e| error(e.to_string()))?;
        let (_, answer) = crate::fetch::send(&self.client, request, 64 * 1024, TIMEOUT)
            .await
            .map_err(error)?;
        let registered: Registered = serde_json::from_slice(&answer)
            .map_err(|e| error(format!("unexpected answer: {e}")))?;
        tracing::info!(subject, id = registered.id, "Avro schema registered");
        ids.insert(topic.to_owned(), registered.id);
        Ok(registered.id)
    }
}
