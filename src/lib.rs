//! pubsub-kafka-bridge: a Google Cloud Pub/Sub push endpoint that writes every verified
//! delivery to Apache Kafka and answers 2xx only after Kafka acknowledged it (acks=all).
//!
//! # Layout
//!
//! ```text
//!  HTTP (hyper, server/) ────┐
//!  Lambda (lambda.rs) ────────┴─> Service (service.rs): routes, bounds, logs, counts, catches panics
//!                                  └─> App (app.rs): the pipeline of one delivery
//!                                 │ auth      token → verified claims (auth/, auth/jwks.rs does the I/O)
//!                                 │ envelope  push body → PubsubMessage
//!                                 │ routes    CEL rules → topic or drop, key, headers, timestamp
//!                                 │ dedup     a redelivery of an acknowledged message stops here
//!                                 │ record    message → key, headers, timestamp
//!                                 │ encode    message → value (raw / json / avro / protobuf /
//!                                 │           pubsub-schema: typed + pubsub_schema)
//!                                 └ kafka     record → partition → batched produce → ack (the `Produce` seam)
//! ```
//!
//! Each stage declares its own settings (`settings.rs` beside it: one `clap::Args` struct whose
//! fields are the flag, the variable, the default, the help and the type); `config` composes
//! them and checks the rules that span stages. Leaves every stage may use: `setting` (the
//! settings parsers), `echo` (how much of a client's input an error repeats), `timestamp` (the
//! one range of record timestamps), `fetch` (bounded HTTP fetches). Nothing below calls back
//! up: the module graph is a DAG (`tests/module_graph.rs`, docs/modules.md).
//!
//! Every failure is a `DeliveryError`, turned into its HTTP status in one place (`error.rs`).
//! The pure stages (`envelope`, `record`, `encode`, `kafka::partition`) take values and return
//! values; only `auth::jwks`, `kafka` and the adapters do I/O.
//!
//! The public surface is what the two binaries, the tests and a library user need; everything
//! else is `pub(crate)` (the `unreachable_pub` lint keeps it so).

pub(crate) mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub(crate) mod config;
pub mod dedup;
pub(crate) mod echo;
pub mod encode;
pub mod envelope;
pub(crate) mod error;
pub(crate) mod fetch;
pub mod kafka;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod limits;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod pubsub_schema;
pub mod record;
pub(crate) mod registry;
pub mod replay;
pub(crate) mod routes;
pub mod server;
pub(crate) mod service;
pub(crate) mod setting;
pub mod timestamp;
pub(crate) mod typed;

pub use app::App;
pub use service::Service;
#[doc(hidden)]
pub use typed::TestCodec;

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
