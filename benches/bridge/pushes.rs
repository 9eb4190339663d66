//! What the load generator sends: push bodies with unique message ids and the whole signed
//! HTTP/1.1 requests built from them before any clock starts.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

/// Push bodies with unique message ids; the payload's base64 is computed once.
pub(crate) struct Bodies {
    encoded: String,
    run: String,
}

impl Bodies {
    pub(crate) fn new(size: usize, run: &str) -> Self {
        let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        Self {
            encoded: base64::engine::general_purpose::STANDARD.encode(payload),
            run: run.to_owned(),
        }
    }
    pub(crate) fn body(&self, i: usize) -> Bytes {
        Bytes::from(format!(
            r#"{{"message":{{"data":"{}","attributes":{{"source":"bench","seq":"{i}"}},"messageId":"{}-{i}","publishTime":"2026-11-24T10:00:00.123456Z"}},"subscription":"projects/bench/subscriptions/push"}}"#,
            self.encoded, self.run
        ))
    }
}

/// A pool of push bodies of `size`, each with its own message id, shared by all callers:
/// building a 1 MiB body per request would load the cores the bridge is measured on.
pub(crate) fn body_pool(size: usize, run: &str) -> Arc<Vec<Bytes>> {
    let bodies = Bodies::new(size, run);
    let distinct = if size >= 1 << 20 { 16 } else { 256 };
    Arc::new((0..distinct).map(|i| bodies.body(i)).collect())
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
