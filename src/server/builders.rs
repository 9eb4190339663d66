//! hyper's HTTP/1 and HTTP/2 settings: the parsers' own bounds on a request head, and HTTP/2's
//! streams, flow-control windows and keep-alive.

use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::limits::{MAX_HEAD_BYTES, MAX_HEAD_FIELDS};

/// What the HTTP parsers themselves take of a request head, above the head limits
/// ([`MAX_HEAD_BYTES`], [`MAX_HEAD_FIELDS`]) that the service checks: a head within these is
/// parsed and then refused by the service with its JSON answer, log line and count; beyond
/// them (whitespace padding, or a head that never ends) hyper answers 431 itself, which is
/// logged and counted when its connection ends. hyper checks the size of a head over all the
/// reads it took, never per read, so the verdict does not depend on how the head was cut.
/// Holding a head takes up to this much memory per connection until its deadline, so the
/// slack over the service's limit is small: a head written canonically is no larger on the wire.
pub const TRANSPORT_HEAD_BYTES: usize = MAX_HEAD_BYTES + (8 << 10);
/// Header fields hyper parses into (it answers 431 beyond).
const TRANSPORT_HEAD_FIELDS: usize = MAX_HEAD_FIELDS + 96;
/// The same bound for HTTP/2, whose header list size counts 32 bytes more per field
/// (RFC 9113 §6.5.2); h2 answers a stream over it 431 itself.
const TRANSPORT_H2_HEADER_LIST: u32 = (TRANSPORT_HEAD_BYTES + 32 * TRANSPORT_HEAD_FIELDS) as u32;
/// HTTP/2 flow-control windows: what one stream, and one connection, may have sent that the
/// bridge has not yet read. Bodies are read as they come, so these bound buffering, not size.
const H2_STREAM_WINDOW: u32 = 256 << 10;
const H2_CONNECTION_WINDOW: u32 = 1 << 20;
/// How often HTTP/2 pings an open connection, so a peer that vanished is noticed.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// hyper's two protocols, configured once; a connection gets the one its first bytes show.
pub(crate) struct Builders {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    /// `h2_max_streams`: requests one HTTP/2 connection may have open at once.
    pub(crate) fn new(h2_max_streams: u32) -> Self {
        let mut http1 = http1::Builder::new();
        // The head deadline is the connection's own (see `supervise`): hyper's starts as soon
        // as a response is written, so it would close keep-alive connections idle past it,
        // cutting `HTTP_IDLE_TIMEOUT_MS` short.
        http1
            .header_read_timeout(None)
            .max_headers(TRANSPORT_HEAD_FIELDS)
            .max_header_size(TRANSPORT_HEAD_BYTES)
            .max_buf_size(TRANSPORT_HEAD_BYTES);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(TRANSPORT_H2_HEADER_LIST)
            .max_concurrent_streams(h2_max_streams)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL);
        Self { http1, http2 }
    }
}
