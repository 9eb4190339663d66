//! pubsub-kafka-bridge: a Google Cloud Pub/Sub push endpoint that writes every verified
//! delivery to Apache Kafka and answers 2xx only after Kafka acknowledged it (acks=all).
//!
//! # Layout
//!
//! ```text
//!  HTTP (hyper, server.rs) ─┐
//!  Lambda (bin/lambda.rs) ──┴─> App::handle (app.rs)
//!                                 │ auth      token → verified claims (auth/, auth/jwks.rs does the I/O)
//!                                 │ envelope  push body → PubsubMessage
//!                                 │ record    message → key, headers, timestamp
//!                                 │ encode    message → value (raw / json / avro / protobuf)
//!                                 └ kafka     record → partition → batched produce → ack
//! ```
//!
//! Every failure is a [`error::DeliveryError`], turned into its HTTP status in one place.
//! The pure stages (`envelope`, `record`, `encode`, `kafka::partition`) take values and return
//! values; only `auth::jwks`, `kafka` and the adapters do I/O.

pub mod app;
pub mod auth;
pub mod config;
pub mod encode;
pub mod envelope;
pub mod error;
pub mod kafka;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod server;

pub use app::App;
pub use config::Config;
pub use error::DeliveryError;
