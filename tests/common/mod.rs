//! Real parts for the integration tests, one file per job: the tansu broker (`broker`), keys,
//! tokens and the JWKS endpoint (`jwks`), the bridge in-process or as a process (`bridge`),
//! the HTTP client (`client`), a Kafka-frame-aware proxy in front of the broker (`proxy`), push
//! envelopes and the Java partitioner (`push`), and the scripted producer of the handler tier
//! (`scripted`). Each test binary uses a part of them.
#![allow(dead_code)]
// Tests read their own environment (TANSU_BIN) and collect the bridge's answers whole.
#![allow(clippy::disallowed_methods)]

pub mod bridge;
pub mod broker;
pub mod client;
pub mod jwks;
pub mod metadata;
pub mod proxy;
pub mod push;
pub mod sasl_responder;
pub mod scripted;
pub mod tls;

#[allow(unused_imports, reason = "each test binary uses a part")]
pub use bridge::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use broker::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use client::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use jwks::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
pub use proxy::*;
#[allow(unused_imports, reason = "each test binary uses a part")]
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

pub fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"))
}
