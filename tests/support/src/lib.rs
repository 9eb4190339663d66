//! Real parts the bridge's integration tests, benches and examples run against, one module per
//! job: the tansu broker (`broker`), keys, tokens and the JWKS endpoint (`jwks`), the bridge
//! in-process or as a process (`bridge`), the HTTP client (`client`), a Kafka-frame-aware proxy
//! in front of the broker (`proxy`), push envelopes and the Java partitioner (`push`), a
//! metadata-server stand-in (`metadata`), a SASL responder (`sasl_responder`), a test CA and
//! TLS proxy (`tls`), the scripted producer of the handler tier (`scripted`), and the two fakes
//! of the typed-record tests: a schema registry (`registry`) and a Schema API (`schema_api`).
//! Each target uses a part of them through `use test_support::*;`.
//!
//! # Why a crate of its own
//!
//! Cargo builds every test, bench and example as a crate of its own, and none of them can name
//! another's modules: shared code is either included by path into each (compiled once per
//! target, and found only by reading the include) or a library they all depend on. This is that
//! library, a workspace member and a dev-dependency of the bridge.
//!
//! It uses the bridge's public API (the in-process [`Bridge`], the [`scripted::ScriptedProducer`]
//! behind the `Produce` seam), so it depends on the bridge while the bridge has it as a
//! dev-dependency. Cargo allows that cycle. Integration tests, benches and examples link the
//! same build of the bridge library this crate links, so a `Config` or `KafkaRecord` is one type
//! across both. The bridge's own unit tests are another build of the bridge (`cfg(test)`): types
//! from here would not match theirs, so unit tests in `src/` do not use this crate.
// Tests read their own environment (TANSU_BIN) and collect the bridge's answers whole.
#![allow(clippy::disallowed_methods)]

pub mod bridge;
pub mod broker;
pub mod client;
pub mod emulator;
pub mod jwks;
pub mod metadata;
pub mod proxy;
pub mod push;
pub mod registry;
pub mod sasl_responder;
pub mod schema_api;
pub mod scripted;
pub mod tls;

pub use bridge::*;
pub use broker::*;
pub use client::*;
pub use jwks::*;
pub use proxy::*;
pub use push::*;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pubsub_kafka_bridge::{App, Config, Service};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client as KafkaClient, ClientBuilder};
use rskafka::record::Record;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Python with the independent decoders and parsers (tests/requirements.txt): `PKB_PYTHON`,
/// else the venv `infra/test.sh` makes in `target/pyenv`.
pub fn python() -> String {
    std::env::var("PKB_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");
        assert!(
            Path::new(venv).exists(),
            "no Python environment: run infra/test.sh (it creates target/pyenv from tests/requirements.txt)"
        );
        venv.to_owned()
    })
}

/// The bridge's test fixtures (`tests/data`).
pub fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data"))
}
