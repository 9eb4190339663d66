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
//! [`timestamp::RecordTimestamp`] is the one range of record timestamps (a leaf: `envelope` and
//! `record` both hold times to it).
//!
//! Every failure is a [`error::DeliveryError`], turned into its HTTP status in one place.
//! The pure stages (`envelope`, `record`, `encode`, `kafka::partition`) take values and return
//! values; only `auth::jwks`, `kafka` and the adapters do I/O.

pub mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub(crate) mod echo;
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
pub(crate) mod setting;
pub mod timestamp;

pub use app::App;
pub use service::Service;

/// Reads the command line and the environment: the command and its configuration.
///
/// On failure the reason has been printed (help and version too, to stdout, exit 0; every
/// configuration error on its own line naming its variable, exit 2) and the exit code is
/// returned.
pub fn configure(
    program: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(cli::Command, Config), std::process::ExitCode> {
    let invocation = cli::parse(args).map_err(|e| {
        let _ = e.print();
        std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 })
    })?;
    let config = invocation
        .config(limits::container_memory_limit())
        .map_err(|e| {
            for error in e.each() {
                eprintln!("{program}: configuration error: {error}");
            }
            std::process::ExitCode::from(2)
        })?;
    Ok((invocation.command, config))
}

/// Installs logging and builds the [`Service`]: what both binaries do after [`configure`].
pub fn start(config: Config) -> Result<std::sync::Arc<Service>, std::process::ExitCode> {
    logging::init(config.log_format, Some(&config.log_filter));
    App::new(config)
        .map(|app| std::sync::Arc::new(Service::new(app)))
        .map_err(|e| {
            tracing::error!("{e}");
            std::process::ExitCode::from(2)
        })
}
pub use config::Config;
pub use error::DeliveryError;
