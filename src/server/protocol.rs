//! Which protocol a new connection speaks, told from its first bytes within the head deadline.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// The client preface that starts an HTTP/2 (h2c prior knowledge) connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    /// h2c with prior knowledge: the connection opened with the HTTP/2 preface.
    Http2,
}

/// Waits until the connection has sent enough to tell HTTP/1 from HTTP/2, or `deadline`
/// passes (`None`: close it). Bytes are peeked, not consumed, so hyper reads them again.
pub(crate) async fn await_request_start(stream: &TcpStream, deadline: Instant) -> Option<Protocol> {
    let mut buffer = [0u8; H2_PREFACE.len()];
    loop {
        let seen = match tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await {
            Ok(Ok(seen)) => seen,
            _ => return None,
        };
        if seen == 0 {
            return None;
        }
        if !is_partial_h2_preface(&buffer[..seen]) {
            return Some(protocol_of(&buffer[..seen]));
        }
        // Part of the HTTP/2 preface (or an HTTP/1 request cut after its first letter):
        // peek returns at once while those bytes sit there, so poll for the rest.
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The protocol of a connection whose first bytes are `seen` (not a partial preface).
fn protocol_of(seen: &[u8]) -> Protocol {
    if seen == H2_PREFACE {
        Protocol::Http2
    } else {
        Protocol::Http1
    }
}

/// Whether `seen` is a strict prefix of the HTTP/2 preface (more bytes are needed to decide).
fn is_partial_h2_preface(seen: &[u8]) -> bool {
    seen.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strict_prefixes_of_the_h2_preface_wait_for_more() {
        assert!(is_partial_h2_preface(b"P"));
        assert!(is_partial_h2_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_partial_h2_preface(H2_PREFACE));
        assert!(!is_partial_h2_preface(b"PO"));
        assert!(!is_partial_h2_preface(b"GET / HTTP/1.1"));
    }

    #[test]
    fn only_the_whole_preface_means_http2() {
        assert_eq!(protocol_of(H2_PREFACE), Protocol::Http2);
        assert_eq!(protocol_of(b"POST / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(
            protocol_of(b"PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n"),
            Protocol::Http1
        );
    }
}
