//! Pub/Sub topic schemas: which revision a message names, that revision's definition from the
//! Schema API, compiled once and cached.
//!
//! `attributes` reads the schema attributes (pure); `api` reads a revision from the Schema API
//! with the runtime service account's token; `cache` keeps compiled revisions, one fetch per
//! revision at a time. The codec (`typed`) turns a message's data into the typed record.

mod api;
pub(crate) mod attributes;
mod cache;
pub(crate) mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::{FetchError, SchemaApi};
use cache::RevisionCache;
use settings::SchemaApiConfig;

use crate::typed::{DataEncoding, TypedSchema};

/// Most revisions kept compiled. A bridge sees the few revisions its topics are published
/// with; each is compiled from at most 300 KiB (Pub/Sub's own limit) of
/// definition, so the cache holds at most 64 × 300 KiB of definitions and their compiled forms.
pub(crate) const MAX_CACHED_REVISIONS: usize = 64;
/// Longest a revision fetch takes (token and request) before deliveries needing it answer 503;
/// never more than half of `KAFKA_PRODUCE_TIMEOUT_MS`, which stays below the push ack deadline.
pub(crate) const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a message's schema revision cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PubsubSchemaError {
    /// The revision does not exist: deleted (the attributes or the API say so), never was,
    /// or the attributes cannot name one. Permanent.
    #[error("schema {revision} not found: {reason}")]
    NotFound {
        /// `projects/P/schemas/S@REVISION` as the message names it (bounded).
        revision: String,
        /// Why.
        reason: String,
    },
    /// The Schema API could not be asked now (unreachable, slow, 401/403, 5xx). Retriable.
    #[error("Pub/Sub Schema API unavailable for {revision}: {reason}")]
    Unavailable {
        /// The revision asked for.
        revision: String,
        /// What went wrong.
        reason: String,
    },
    /// The revision's definition is one the bridge will not compile (too long, too deep, not
    /// valid, an unknown type). Permanent: a revision never changes.
    #[error("schema {revision} refused: {reason}")]
    Refused {
        /// The revision.
        revision: String,
        /// Why.
        reason: String,
    },
    /// `googclient_schemaencoding` is neither `JSON` nor `BINARY`: the data cannot be read.
    #[error("schema {revision}: unknown encoding {encoding:?} (expected JSON or BINARY)")]
    UnknownEncoding {
        /// The revision.
        revision: String,
        /// The encoding attribute as given (bounded).
        encoding: String,
    },
}

impl PubsubSchemaError {
    /// Stable machine-readable code.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "schema_not_found",
            Self::Unavailable { .. } => "schema_api_unavailable",
            Self::Refused { .. } => "schema_refused",
            Self::UnknownEncoding { .. } => "schema_mismatch",
        }
    }

    /// Whether no redelivery can succeed (dead letter or 422).
    pub(crate) fn is_permanent(&self) -> bool {
        !matches!(self, Self::Unavailable { .. })
    }
}

/// A message's schema revision, compiled, and how its data is encoded.
#[derive(Clone)]
pub(crate) struct MessageSchema {
    /// The compiled revision.
    pub(crate) schema: Arc<TypedSchema>,
    /// How the message's data is written.
    pub(crate) encoding: DataEncoding,
    /// `projects/P/schemas/S@REVISION`.
    pub(crate) revision: String,
}

/// What the cache keeps for a revision: compiled, or the refusal (as lasting as the revision).
type Compiled = Result<Arc<TypedSchema>, String>;

/// The schema revisions of the messages: read from the Schema API and cached.
#[derive(Clone)]
pub(crate) struct PubsubSchemas {
    api: Arc<SchemaApi>,
    cache: RevisionCache<Compiled>,
    timeout: Duration,
}

impl std::fmt::Debug for PubsubSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubSchemas")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl PubsubSchemas {
    /// Revisions read through `config`'s API with tokens from `metadata_host`; a fetch takes at
    /// most [`MAX_FETCH_TIMEOUT`] and half of `produce_timeout`, so a delivery that waits for
    /// one still answers within the produce timeout.
    pub(crate) fn new(
        config: &SchemaApiConfig,
        metadata_host: &str,
        produce_timeout: Duration,
    ) -> Self {
        Self {
            api: Arc::new(SchemaApi::new(config, metadata_host)),
            cache: RevisionCache::new(MAX_CACHED_REVISIONS),
            timeout: fetch_timeout(produce_timeout),
        }
    }

    /// The schema of a message with `attributes`: `None` when it names none (its topic has no
    /// schema; the message is written raw).
    pub(crate) async fn for_message(
        &self,
        attributes: &BTreeMap<String, String>,
    ) -> Result<Option<MessageSchema>, PubsubSchemaError> {
        let Some(named) = attributes::schema_ref(attributes)? else {
            return Ok(None);
        };
        // The fetch is built only on a miss: a hit clones nothing but the compiled schema's Arc.
        let fetch = || {
            let (api, revision, timeout) =
                (Arc::clone(&self.api), named.revision.clone(), self.timeout);
            async move { fetch_and_compile(&api, &revision, timeout).await }
        };
        let compiled = self.cache.get(&named.revision, fetch).await?;
        match compiled {
            Ok(schema) => Ok(Some(MessageSchema {
                schema,
                encoding: named.encoding,
                revision: named.revision,
            })),
            Err(reason) => Err(PubsubSchemaError::Refused {
                revision: named.revision,
                reason,
            }),
        }
    }

    /// Lookups answered from the cache (metrics).
    pub(crate) fn hits(&self) -> u64 {
        self.cache.hits()
    }

    /// Lookups that fetched or waited for a fetch (metrics).
    pub(crate) fn misses(&self) -> u64 {
        self.cache.misses()
    }

    /// Whether the Schema API answers with the configured credentials (`check`): a revision
    /// that cannot exist is asked for, and a 404 proves the API took the request; nothing
    /// is cached.
    pub(crate) async fn probe(&self, project: &str) -> Result<String, String> {
        let probe = format!("projects/{project}/schemas/pubsub-kafka-bridge-check@0");
        match self.api.fetch(&probe, self.timeout).await {
            Ok(_) | Err(FetchError::NotFound(_)) => Ok(match self.api.sends_token() {
                true => "reachable; the runtime account's token accepted".to_owned(),
                false => "reachable (loopback: no token sent)".to_owned(),
            }),
            Err(FetchError::Unavailable(reason) | FetchError::Refused(reason)) => Err(reason),
        }
    }
}

/// A fetch's deadline for `produce_timeout`.
fn fetch_timeout(produce_timeout: Duration) -> Duration {
    MAX_FETCH_TIMEOUT.min(produce_timeout / 2)
}

/// Reads and compiles `revision`: compiled once per revision, in the fetch's own task.
async fn fetch_and_compile(
    api: &SchemaApi,
    revision: &str,
    timeout: Duration,
) -> Result<Compiled, PubsubSchemaError> {
    let fetched = api.fetch(revision, timeout).await;
    let revision = revision.to_owned();
    match fetched {
        Ok(fetched) => Ok(TypedSchema::compile(fetched.kind, &fetched.definition)
            .map(Arc::new)
            .map_err(|e| e.to_string())),
        Err(FetchError::Refused(reason)) => Ok(Err(reason)),
        Err(FetchError::NotFound(reason)) => Err(PubsubSchemaError::NotFound { revision, reason }),
        Err(FetchError::Unavailable(reason)) => {
            tracing::warn!(revision, reason, "Pub/Sub Schema API unavailable");
            Err(PubsubSchemaError::Unavailable { revision, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_ends_within_half_the_produce_timeout_and_five_seconds() {
        assert_eq!(
            fetch_timeout(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(
            fetch_timeout(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            fetch_timeout(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn codes_and_permanence() {
        let error = |code: &str| match code {
            "nf" => PubsubSchemaError::NotFound {
                revision: "r".into(),
                reason: "x".into(),
            },
            "un" => PubsubSchemaError::Unavailable {
                revision: "r".into(),
                reason: "x".into(),
            },
            "re" => PubsubSchemaError::Refused {
                revision: "r".into(),
                reason: "x".into(),
            },
            _ => PubsubSchemaError::UnknownEncoding {
                revision: "r".into(),
                encoding: "x".into(),
            },
        };
        assert_eq!(error("nf").code(), "schema_not_found");
        assert_eq!(error("un").code(), "schema_api_unavailable");
        assert_eq!(error("re").code(), "schema_refused");
        assert_eq!(error("ue").code(), "schema_mismatch");
        assert!(error("nf").is_permanent());
        assert!(!error("un").is_permanent());
        assert!(error("re").is_permanent());
        assert!(error("ue").is_permanent());
    }
}
