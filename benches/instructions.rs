//! The delivery path counted in instructions and allocations, not seconds: callgrind counts
//! the same for the same binary and input however busy the machine is, so every before/after
//! of a change to the hot path is comparable. Run through `infra/instructions.sh`.
//!
//! `instructions list` names the cases; `instructions CASE N` sends N deliveries of CASE through
//! the whole service (routing, a cached push token, envelope, record, encoding, the in-flight
//! budget) into an in-memory producer behind the `Produce` seam, after a warm-up. Only
//! `measured_deliveries` is counted (callgrind `--toggle-collect`), so setup never shows.
#![allow(
    clippy::disallowed_methods,
    reason = "the bench reads its own settings"
)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use pubsub_kafka_bridge::kafka::{Ack, KafkaError, Produce};
use pubsub_kafka_bridge::limits::InflightPermit;
use pubsub_kafka_bridge::record::KafkaRecord;
use pubsub_kafka_bridge::{App, Config, Service};
use test_support::*;

/// Acknowledges every record at once and drops it: only the bridge's own work is counted.
#[derive(Debug, Clone, Copy)]
struct NullProducer;

impl Produce for NullProducer {
    fn produce(
        &self,
        _topic: &str,
        record: KafkaRecord,
        hold: Option<InflightPermit>,
    ) -> impl Future<Output = Result<Ack, KafkaError>> + Send {
        drop((record, hold));
        std::future::ready(Ok(Ack {
            partition: 0,
            offset: 0,
        }))
    }

    fn reached_within(&self, _window: Duration) -> bool {
        true
    }

    fn produced(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// One way a delivery can arrive.
#[derive(Debug, Clone, Copy)]
struct Case {
    size: usize,
    wrapped: bool,
    format: Format,
    routing: Routing,
}

/// Whether a case's deliveries are routed by rules (`ROUTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    /// No rules; the case's own payload.
    None,
    /// No rules; an order (a JSON object with a customer id) typed by an attribute: the
    /// baseline of `Rules`.
    Order,
    /// The same order through [`RULES`].
    Rules,
}

/// Three rules: route by attribute, the last one matching, with a key from a JSON field and one
/// header.
const RULES: &str = r#"[
  {"when": "attributes.type == 'click'", "topic": "clicks"},
  {"when": "attributes.type == 'view'", "topic": "views"},
  {"when": "attributes.type == 'order'", "topic": "orders",
   "key": "json.customer.id", "headers": {"source": "attributes.origin"}}
]"#;

/// The value format of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Raw,
    Avro,
    /// `json` with `KAFKA_JSON_EMBED_DATA=true`, and a JSON payload (an array of small objects).
    JsonEmbed,
}

impl Case {
    fn all() -> Vec<Self> {
        let mut cases = Vec::new();
        for size in [100, 1024, 64 * 1024, 1024 * 1024] {
            for wrapped in [true, false] {
                for format in [Format::Raw, Format::Avro] {
                    cases.push(Self {
                        size,
                        wrapped,
                        format,
                        routing: Routing::None,
                    });
                }
            }
        }
        for size in [1024, 1024 * 1024] {
            cases.push(Self {
                size,
                wrapped: true,
                format: Format::JsonEmbed,
                routing: Routing::None,
            });
        }
        for routing in [Routing::Order, Routing::Rules] {
            cases.push(Self {
                size: 1024,
                wrapped: true,
                format: Format::Raw,
                routing,
            });
        }
        cases
    }

    fn name(&self) -> String {
        let size = match self.size {
            s if s >= 1 << 20 => format!("{}MiB", s >> 20),
            s if s >= 1024 => format!("{}KiB", s >> 10),
            s => format!("{s}B"),
        };
        format!(
            "{size}-{}-{}{}",
            if self.wrapped { "wrapped" } else { "unwrapped" },
            match self.format {
                Format::Raw => "raw",
                Format::Avro => "avro",
                Format::JsonEmbed => "json-embed",
            },
            match self.routing {
                Routing::None => "",
                Routing::Order => "-order",
                Routing::Rules => "-order-routes",
            }
        )
    }

    fn request(&self, token: &str, n: usize) -> http::Request<Bytes> {
        let payload: Vec<u8> = match (self.format, self.routing) {
            (_, Routing::Order | Routing::Rules) => order_payload(self.size),
            (Format::JsonEmbed, _) => json_payload(self.size),
            _ => (0..self.size).map(|i| (i % 251) as u8).collect(),
        };
        let id = format!("message-{n}");
        let publish_time = "2026-03-04T05:06:07.891Z";
        let request = http::Request::post("/")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if self.wrapped {
            let mut attributes = vec![("origin".to_owned(), "bench".to_owned())];
            if self.routing != Routing::None {
                attributes.push(("type".to_owned(), "order".to_owned()));
            }
            let body = envelope(&payload, &attributes, &id, publish_time, Some("key-7"));
            request.body(Bytes::from(body.to_string())).unwrap()
        } else {
            request
                .header("x-goog-pubsub-message-id", id)
                .header("x-goog-pubsub-publish-time", publish_time)
                .header(
                    "x-goog-pubsub-subscription-name",
                    "projects/p/subscriptions/s",
                )
                .header("x-goog-pubsub-ordering-key", "key-7")
                .header("origin", "bench")
                .body(Bytes::from(payload))
                .unwrap()
        }
    }
}

/// A JSON array of small objects, about `size` bytes: what an embedded payload looks like.
fn json_payload(size: usize) -> Vec<u8> {
    let mut text = String::from("[");
    let mut i = 0;
    while text.len() < size {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"id":{i},"name":"item-{i}","tags":["a","b"],"price":{}.5,"stock":{{"here":true}}}}"#,
            i % 100
        ));
        i += 1;
    }
    text.push(']');
    text.into_bytes()
}

/// An order of about `size` bytes: a customer id, then items.
fn order_payload(size: usize) -> Vec<u8> {
    let head = br#"{"customer":{"id":"c-42","tier":"gold"},"items":"#;
    let mut payload = head.to_vec();
    payload.extend(json_payload(size.saturating_sub(head.len() + 1)));
    payload.push(b'}');
    payload
}

/// The counted part (callgrind's toggle): nothing but deliveries through the service.
#[inline(never)]
fn measured_deliveries(
    runtime: &tokio::runtime::Runtime,
    service: &Service<NullProducer>,
    requests: Vec<http::Request<Bytes>>,
) -> usize {
    deliver_all(runtime, service, requests)
}

/// Sends `requests` one after the other; how many were acknowledged.
fn deliver_all(
    runtime: &tokio::runtime::Runtime,
    service: &Service<NullProducer>,
    requests: Vec<http::Request<Bytes>>,
) -> usize {
    runtime.block_on(async {
        let mut delivered = 0;
        for request in requests {
            if service.handle(request).await.status() == 204 {
                delivered += 1;
            }
        }
        delivered
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let cases = Case::all();
    let Some(name) = args.first() else {
        eprintln!("usage: instructions list | instructions CASE N");
        std::process::exit(2);
    };
    if name == "list" {
        for case in &cases {
            println!("{}", case.name());
        }
        return;
    }
    let case = cases
        .iter()
        .find(|c| &c.name() == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    let n: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let jwks = runtime.block_on(JwksServer::start(&[key(1)]));
    let mut env: HashMap<String, String> = [
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("KAFKA_TOPIC", "events"),
        ("OIDC_AUDIENCE", AUDIENCE),
        ("OIDC_ALLOWED_EMAILS", PUSH_EMAIL),
        (
            "KAFKA_VALUE_FORMAT",
            match case.format {
                Format::Raw => "raw",
                Format::Avro => "avro",
                Format::JsonEmbed => "json",
            },
        ),
        (
            "KAFKA_JSON_EMBED_DATA",
            if case.format == Format::JsonEmbed {
                "true"
            } else {
                "false"
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("OIDC_JWKS_URL".into(), jwks.url.clone());
    if case.routing == Routing::Rules {
        env.insert("ROUTES".into(), RULES.into());
    }
    // The deduplication cache's cost is the difference `DEDUP_CACHE_ENTRIES=0` makes.
    if let Ok(entries) = std::env::var("DEDUP_CACHE_ENTRIES") {
        env.insert("DEDUP_CACHE_ENTRIES".into(), entries);
    }
    let config = Config::from_map(&env).expect("bench config");
    let service = Service::new(App::with_producer(config, NullProducer).expect("app"));
    let token = mint(&key(1), &google_claims());
    // Warm-up: keys fetched, the token verified and cached, buffers grown.
    let warm: Vec<_> = (0..5).map(|i| case.request(&token, i)).collect();
    assert_eq!(deliver_all(&runtime, &service, warm), 5);
    let requests: Vec<_> = (0..n).map(|i| case.request(&token, 100 + i)).collect();
    let delivered = measured_deliveries(&runtime, &service, requests);
    assert_eq!(delivered, n, "every delivery acknowledged");
    println!("{} {n}", case.name());
}
