//! The load generator: keep-alive connections that each send a prepared push when the last one
//! was answered, read the answers with hyper's parser, and count what was acknowledged.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::closed_loop::{Run, Until, closed_loop};

/// One keep-alive connection of the load generator: writes a prepared request, reads the
/// answer's head (and body, if any) with hyper's parser, as wrk does. A pooled HTTP client
/// cost the machine about as much CPU per request as the bridge itself; this costs a few µs,
/// so the cores the bridge shares with its load and the broker go to them.
struct PushConnection {
    addr: SocketAddr,
    stream: Option<tokio::net::TcpStream>,
    received: Vec<u8>,
}

/// What became of one push.
enum Answer {
    /// 204: acknowledged.
    Acknowledged,
    /// 503, or the connection closed under it: Pub/Sub takes either as a negative ack.
    Refused,
    /// Anything else, with the answer for the panic message.
    Unexpected(String),
}

impl PushConnection {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            received: Vec::with_capacity(4096),
        }
    }

    async fn push(&mut self, request: &[u8]) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let Ok(stream) = tokio::net::TcpStream::connect(self.addr).await else {
                return Answer::Refused;
            };
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.received.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        if stream.write_all(request).await.is_err() {
            self.stream = None;
            return Answer::Refused;
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = response.parse(&self.received) {
                let status = response.code.unwrap_or(0);
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
                let closes = header("connection").is_some_and(|v| v == "close");
                let end = head + length;
                if self.received.len() >= end {
                    let text = String::from_utf8_lossy(&self.received[head..end]).into_owned();
                    self.received.drain(..end);
                    if closes {
                        self.stream = None;
                    }
                    return match status {
                        204 => Answer::Acknowledged,
                        503 => Answer::Refused,
                        _ => Answer::Unexpected(format!("{status}: {text}")),
                    };
                }
            }
            let stream = self.stream.as_mut().expect("open while reading");
            if self.received.capacity() == self.received.len() {
                self.received.reserve(4096);
            }
            match stream.read_buf(&mut self.received).await {
                Ok(0) | Err(_) => {
                    self.stream = None;
                    return Answer::Refused;
                }
                Ok(_) => {}
            }
        }
    }
}

/// Pushes from `concurrency` keep-alive connections, each sending its next request when the
/// last was answered (the load shape of Pub/Sub's push window), cycling through `requests`
/// until `until`. Only the exchange is timed. A refused push is counted, not timed, and its
/// connection pauses 100 ms before the next (Pub/Sub backs off after a negative ack); with
/// `strict`, a refusal is an error like any answer but 204.
///
/// The load runs on a thread and single-threaded runtime of its own, as wrk's one thread does:
/// spread over the bench's multi-threaded runtime it cost the cores more in wake-ups between
/// threads than in its own work.
pub(crate) async fn push_load(
    addr: SocketAddr,
    requests: Arc<Vec<Bytes>>,
    concurrency: usize,
    until: Until,
    strict: bool,
) -> Run {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(push_load_here(addr, requests, concurrency, until, strict))
    })
    .await
    .unwrap()
}

async fn push_load_here(
    addr: SocketAddr,
    requests: Arc<Vec<Bytes>>,
    concurrency: usize,
    until: Until,
    strict: bool,
) -> Run {
    let caller = move || PushConnection::new(addr);
    closed_loop(concurrency, until, caller, move |mut connection, i| {
        let requests = Arc::clone(&requests);
        async move {
            let acknowledged = match connection.push(&requests[i % requests.len()]).await {
                Answer::Acknowledged => true,
                Answer::Refused if !strict => false,
                Answer::Refused => panic!("push refused (503 or connection closed)"),
                Answer::Unexpected(answer) => panic!("unexpected answer {answer}"),
            };
            (connection, acknowledged)
        }
    })
    .await
}
