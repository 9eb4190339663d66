//! What the load generator sends: push bodies with unique message ids and the whole signed
//! HTTP/1.1 requests built from them before any clock starts.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

/// Push bodies with unique message ids; each payload's base64 is computed once.
pub(crate) struct Bodies {
    /// The payloads, taken in turn.
    encoded: Vec<String>,
    /// More attributes, as JSON members after the two every body has.
    attributes: &'static str,
    run: String,
}

impl Bodies {
    pub(crate) fn new(size: usize, run: &str) -> Self {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        Self {
            encoded: vec![base64::engine::general_purpose::STANDARD.encode(payload)],
            attributes: "",
            run: run.to_owned(),
        }
    }

    /// Orders of about `size` bytes (a JSON object with a customer id, then items), typed by
    /// the attribute `type` and carrying `origin`: what [`crate::in_turns::ROUTES`] reads. The
    /// customer ids differ, so records keyed by them spread over the partitions as unkeyed
    /// ones do.
    pub(crate) fn orders(size: usize, run: &str) -> Self {
        let order = |customer: usize| {
            let mut payload =
                format!(r#"{{"customer":{{"id":"c-{customer}","tier":"gold"}},"items":["#);
            let mut i = 0;
            while payload.len() + 2 < size {
                if i > 0 {
                    payload.push(',');
                }
                payload.push_str(&format!(
                    r#"{{"id":{i},"name":"item-{i}","tags":["a","b"],"price":{}.5}}"#,
                    i % 100
                ));
                i += 1;
            }
            payload.push_str("]}");
            base64::engine::general_purpose::STANDARD.encode(payload)
        };
        Self {
            encoded: (0..64).map(order).collect(),
            attributes: r#","type":"order","origin":"web""#,
            run: run.to_owned(),
        }
    }

    pub(crate) fn body(&self, i: usize) -> Bytes {
        Bytes::from(format!(
            r#"{{"message":{{"data":"{}","attributes":{{"source":"bench","seq":"{i}"{}}},"messageId":"{}-{i}","publishTime":"2026-11-24T10:00:00.123456Z"}},"subscription":"projects/bench/subscriptions/push"}}"#,
            self.encoded[i % self.encoded.len()],
            self.attributes,
            self.run
        ))
    }

    /// A pool of these bodies, each with its own message id, shared by all callers: building a
    /// 1 MiB body per request would load the cores the bridge is measured on.
    pub(crate) fn pool(&self, size: usize) -> Arc<Vec<Bytes>> {
        let distinct = if size >= 1 << 20 { 16 } else { 256 };
        Arc::new((0..distinct).map(|i| self.body(i)).collect())
    }
}

/// A pool of push bodies of `size` (see [`Bodies::pool`]).
pub(crate) fn body_pool(size: usize, run: &str) -> Arc<Vec<Bytes>> {
    Bodies::new(size, run).pool(size)
}

/// Prepared signed pushes: each a whole HTTP/1.1 request (head and body in one buffer), built
/// before any clock starts.
pub(crate) fn prepared_pushes(addr: SocketAddr, token: &str, bodies: &[Bytes]) -> Arc<Vec<Bytes>> {
    Arc::new(
        bodies
            .iter()
            .map(|body| {
                let mut request = format!(
                    "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                     authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                request.extend_from_slice(body);
                Bytes::from(request)
            })
            .collect(),
    )
}
