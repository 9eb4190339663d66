//! The Pub/Sub Schema API: one revision's definition (`GET /v1/{name}@{revision}?view=FULL`),
//! with the runtime service account's access token from the metadata server.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

use super::settings::SchemaApiConfig;
use crate::kafka::oauth::{GoogleTokenProvider, REFRESH_MARGIN};
use crate::typed::SchemaKind;

/// The longest definition Pub/Sub lets a schema have ("Schema definition field cannot exceed
/// 300 KB in size", <https://cloud.google.com/pubsub/docs/schemas#quotas_and_limits>), read as
/// KiB like the codec's own bound, which refuses a longer one.
const MAX_DEFINITION_BYTES: usize = 300 * 1024;
/// Largest answer read: the longest definition, JSON-escaped, and the resource's few other
/// fields. A longer answer holds a longer definition and is refused unread.
const MAX_ANSWER_BYTES: usize = 2 * MAX_DEFINITION_BYTES + 16 * 1024;

/// A revision as the Schema API gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Revision {
    /// Avro or Protocol Buffers.
    pub(crate) kind: SchemaKind,
    /// The schema text.
    pub(crate) definition: String,
}

/// Why a revision could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// 404: the revision does not exist (deleted, or never was).
    NotFound(String),
    /// Unreachable, too slow, refused the token (401, 403) or failed (5xx): may pass.
    Unavailable(String),
    /// The answer holds a definition the bridge will not read (far too long, unknown type).
    Refused(String),
}

/// The schema resource (`projects.schemas`), the fields read.
#[derive(Deserialize)]
struct SchemaResource {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    definition: String,
}

/// The Schema API client.
pub(crate) struct SchemaApi {
    base: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// `None` for a loopback http URL (the emulator).
    token: Option<AccessToken>,
}

impl std::fmt::Debug for SchemaApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaApi")
            .field("base", &self.base)
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl SchemaApi {
    /// A client for `config`, asking `metadata_host` for tokens when it sends them.
    pub(crate) fn new(config: &SchemaApiConfig, metadata_host: &str) -> Self {
        Self {
            base: config.url.clone(),
            client: crate::fetch::https_client(),
            token: config.send_token.then(|| AccessToken::new(metadata_host)),
        }
    }

    /// Whether requests carry the access token.
    pub(crate) fn sends_token(&self) -> bool {
        self.token.is_some()
    }

    /// Revision `revision` (`projects/P/schemas/S@REV`, already checked by `attributes`), all
    /// of it within `timeout` (token included).
    pub(crate) async fn fetch(
        &self,
        revision: &str,
        timeout: Duration,
    ) -> Result<Revision, FetchError> {
        let exchange = async {
            let token = match &self.token {
                Some(token) => Some(token.get().await.map_err(FetchError::Unavailable)?),
                None => None,
            };
            let request = request(&self.base, revision, token.as_deref())
                .map_err(|e| FetchError::Unavailable(e.to_string()))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Unavailable(e.to_string()))?;
            let status = response.status();
            #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                    Some(_) => FetchError::Refused(format!(
                        "the definition is longer than {MAX_DEFINITION_BYTES} bytes"
                    )),
                    None => FetchError::Unavailable(e.to_string()),
                })?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| FetchError::Unavailable(format!("no answer within {timeout:?}")))??;
        answer(status, &body)
    }
}

/// The request for `revision`, with `token` as its bearer when given.
fn request(
    base: &str,
    revision: &str,
    token: Option<&str>,
) -> Result<http::Request<Empty<Bytes>>, http::Error> {
    let mut request = http::Request::get(format!("{base}/v1/{revision}?view=FULL"))
        .header(http::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Empty::new())
}

/// What an answer says: the revision, or why there is none.
fn answer(status: http::StatusCode, body: &[u8]) -> Result<Revision, FetchError> {
    if status == http::StatusCode::NOT_FOUND {
        return Err(FetchError::NotFound(
            "the Schema API has no such revision (404)".into(),
        ));
    }
    if !status.is_success() {
        return Err(FetchError::Unavailable(format!("HTTP {status}")));
    }
    let resource: SchemaResource = serde_json::from_slice(body).map_err(|e| {
        FetchError::Unavailable(format!(
            "unexpected answer: {}",
            crate::echo::bounded_echo(&e.to_string())
        ))
    })?;
    // `Schema.Type` of google/pubsub/v1/schema.proto.
    let kind = match resource.kind.as_str() {
        "AVRO" => SchemaKind::Avro,
        "PROTOCOL_BUFFER" => SchemaKind::Protobuf,
        other => {
            return Err(FetchError::Refused(format!(
                "schema type {:?} is neither AVRO nor PROTOCOL_BUFFER",
                crate::echo::bounded_echo(other)
            )));
        }
    };
    Ok(Revision {
        kind,
        definition: resource.definition,
    })
}

/// The runtime service account's access token, kept until shortly before it expires.
struct AccessToken {
    provider: GoogleTokenProvider,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl AccessToken {
    fn new(metadata_host: &str) -> Self {
        Self {
            provider: GoogleTokenProvider::new(metadata_host, None),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self
            .provider
            .fetch_access_token()
            .await
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2));
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_the_full_revision_with_the_token_when_given() {
        let with = request(
            "https://pubsub.googleapis.com",
            "projects/p/schemas/s@abc",
            Some("ya29.t"),
        )
        .unwrap();
        assert_eq!(
            with.uri(),
            "https://pubsub.googleapis.com/v1/projects/p/schemas/s@abc?view=FULL"
        );
        assert_eq!(with.headers()[http::header::AUTHORIZATION], "Bearer ya29.t");
        let without = request("http://127.0.0.1:8085", "projects/p/schemas/s@abc", None).unwrap();
        assert!(without.headers().get(http::header::AUTHORIZATION).is_none());
    }

    #[test]
    fn reads_avro_and_protobuf_revisions() {
        let avro = br#"{"name":"projects/p/schemas/s","type":"AVRO","definition":"{\"type\":\"string\"}","revisionId":"abc"}"#;
        assert_eq!(
            answer(http::StatusCode::OK, avro).unwrap(),
            Revision {
                kind: SchemaKind::Avro,
                definition: r#"{"type":"string"}"#.into()
            }
        );
        let proto = br#"{"type":"PROTOCOL_BUFFER","definition":"syntax = \"proto3\";"}"#;
        assert_eq!(
            answer(http::StatusCode::OK, proto).unwrap().kind,
            SchemaKind::Protobuf
        );
    }

    #[test]
    fn a_missing_revision_is_not_found_and_other_failures_may_pass() {
        assert!(matches!(
            answer(http::StatusCode::NOT_FOUND, b"{}"),
            Err(FetchError::NotFound(_))
        ));
        for status in [401, 403, 429, 500, 503] {
            let status = http::StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(answer(status, b"{}"), Err(FetchError::Unavailable(_))),
                "{status}"
            );
        }
        assert!(matches!(
            answer(http::StatusCode::OK, b"<html>"),
            Err(FetchError::Unavailable(_))
        ));
    }

    #[test]
    fn refuses_unknown_types() {
        for kind in ["TYPE_UNSPECIFIED", "", "avro"] {
            let body = serde_json::json!({"type": kind, "definition": "x"}).to_string();
            let refused = answer(http::StatusCode::OK, body.as_bytes());
            assert!(matches!(refused, Err(FetchError::Refused(_))), "{kind}");
        }
    }

    #[test]
    fn the_longest_definition_fits_an_answer_even_escaped() {
        // A quote or a backslash takes two characters in JSON.
        let definition = "\"".repeat(MAX_DEFINITION_BYTES);
        let body = serde_json::json!({"type": "AVRO", "definition": definition}).to_string();
        assert!(body.len() <= MAX_ANSWER_BYTES);
        assert!(answer(http::StatusCode::OK, body.as_bytes()).is_ok());
    }
}
