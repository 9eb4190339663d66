//! pubsub-kafka-bridge: a Google Cloud Pub/Sub push endpoint that writes every verified
//! delivery to Apache Kafka and answers 2xx only after Kafka acknowledged it (acks=all).
//!
//! # Layout
//!
//! ```text
//!  HTTP (hyper, server.rs) ──┐
//!  Lambda (lambda.rs) ────────┴─> Service (service.rs): routes, bounds, logs, counts, catches panics
//!                                  └─> App (app.rs): the pipeline of one delivery
//!                                 │ auth      token → verified claims (auth/, auth/jwks.rs does the I/O)
//!                                 │ envelope  push body → PubsubMessage
//!                                 │ record    message → key, headers, timestamp
//!                                 │ encode    message → value (raw / json / avro / protobuf)
//!                                 └ kafka     record → partition → batched produce → ack (the `Produce` seam)
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
pub mod fetch;
pub mod kafka;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod record;
pub mod registry;
pub mod server;
pub mod service;

pub use app::App;
pub use service::Service;

/// Reads the configuration, installs logging and builds the [`Service`]: what both binaries do first.
///
/// On failure the reason has been printed (a configuration error names its variable) and the
/// exit code is returned.
pub fn start_from_env(program: &str) -> Result<std::sync::Arc<Service>, std::process::ExitCode> {
    let config = Config::from_env().map_err(|e| {
        eprintln!("{program}: configuration error: {e}");
        std::process::ExitCode::from(2)
    })?;
    logging::init(config.log_format);
    App::new(config)
        .map(|app| std::sync::Arc::new(Service::new(app)))
        .map_err(|e| {
            tracing::error!("{e}");
            std::process::ExitCode::from(2)
        })
}
pub use config::Config;
pub use error::DeliveryError;
