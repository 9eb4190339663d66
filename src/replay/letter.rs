//! What a record of the dead-letter topic is: a dead letter the bridge wrote, a marker a replay
//! wrote, or neither (pure: record in, verdict out).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderMap;

use super::args::parse_pair;
use crate::app::{HEADER_ERROR, HEADER_ERROR_MESSAGE, HEADER_REQUEST_HEADERS};
use crate::record::{HEADER_MESSAGE_ID, HEADER_SUBSCRIPTION};

/// Header of a replay marker: the `PARTITION:OFFSET` of the dead letter a replay wrote.
pub(crate) const HEADER_REPLAY_OF: &str = "pubsub.replay_of";

/// The longest error code a dead letter of the bridge carries; the codes are short
/// `snake_case` names (`record_too_large`).
const MAX_CODE_LEN: usize = 64;

/// One record of the dead-letter topic, recognised.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Letter {
    /// A dead letter the bridge wrote.
    Dead(DeadLetter),
    /// A replay's note that it wrote the dead letter at `(partition, offset)`.
    Marker {
        /// Where the replayed dead letter is.
        of: (i32, i64),
        /// The replayed message: `(subscription, message id)`, when it was known.
        message: Option<(String, String)>,
    },
    /// Not written by the bridge: why not.
    Foreign(String),
}

/// A dead letter: the original request and why it could not be delivered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// The failure's code (`pubsub.error`).
    pub(crate) code: String,
    /// The request headers the message is read from (unwrapped pushes; empty otherwise).
    pub(crate) headers: HeaderMap,
    /// The original request body.
    pub(crate) body: Bytes,
}

/// Recognises a record of the dead-letter topic by its headers and value.
pub(crate) fn recognise(headers: &BTreeMap<String, Vec<u8>>, value: Option<&[u8]>) -> Letter {
    let text = |name: &str| headers.get(name).map(|v| std::str::from_utf8(v).ok());
    match (text(HEADER_ERROR), text(HEADER_REPLAY_OF)) {
        (Some(code), _) => dead_letter(headers, code, value),
        (None, Some(of)) => match of.and_then(parse_pair) {
            Some(of) => Letter::Marker {
                of,
                message: text(HEADER_SUBSCRIPTION)
                    .flatten()
                    .zip(text(HEADER_MESSAGE_ID).flatten())
                    .map(|(s, id)| (s.to_owned(), id.to_owned())),
            },
            None => foreign(format!("{HEADER_REPLAY_OF} is not PARTITION:OFFSET")),
        },
        (None, None) => foreign(format!("no {HEADER_ERROR} header")),
    }
}

fn dead_letter(
    headers: &BTreeMap<String, Vec<u8>>,
    code: Option<&str>,
    value: Option<&[u8]>,
) -> Letter {
    let Some(code) = code.filter(|code| is_code(code)) else {
        return foreign(format!("{HEADER_ERROR} is not an error code"));
    };
    if !headers.contains_key(HEADER_ERROR_MESSAGE) {
        return foreign(format!("no {HEADER_ERROR_MESSAGE} header"));
    }
    let Some(body) = value else {
        return foreign("no value (the original request)".to_owned());
    };
    let request = match headers.get(HEADER_REQUEST_HEADERS) {
        None => HeaderMap::new(),
        Some(block) => match crate::envelope::request_headers::restore(block) {
            Ok(request) => request,
            Err(reason) => return foreign(format!("{HEADER_REQUEST_HEADERS}: {reason}")),
        },
    };
    Letter::Dead(DeadLetter {
        code: code.to_owned(),
        headers: request,
        body: Bytes::copy_from_slice(body),
    })
}

/// A code as the bridge writes them: short, lower-case ASCII letters, digits and `_`.
fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn foreign(reason: String) -> Letter {
    Letter::Foreign(reason)
}

/// The headers of the marker a replay writes for the dead letter at `of`.
pub(crate) fn marker_headers(
    of: (i32, i64),
    message: Option<&(String, String)>,
) -> BTreeMap<String, Vec<u8>> {
    let mut headers = BTreeMap::new();
    headers.insert(
        HEADER_REPLAY_OF.to_owned(),
        format!("{}:{}", of.0, of.1).into_bytes(),
    );
    if let Some((subscription, id)) = message {
        headers.insert(
            HEADER_SUBSCRIPTION.to_owned(),
            subscription.clone().into_bytes(),
        );
        headers.insert(HEADER_MESSAGE_ID.to_owned(), id.clone().into_bytes());
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    fn dead(code: &[u8]) -> BTreeMap<String, Vec<u8>> {
        headers(&[
            ("pubsub.error", code),
            ("pubsub.error_message", b"why"),
            ("pubsub.message_id", b"42"),
        ])
    }

    #[test]
    fn a_dead_letter_of_the_bridge_is_recognised_with_its_request() {
        assert_eq!(
            recognise(&dead(b"record_too_large"), Some(b"{}")),
            Letter::Dead(DeadLetter {
                code: "record_too_large".into(),
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"{}"),
            })
        );
        let mut unwrapped = dead(b"route_failed");
        unwrapped.insert(
            "pubsub.request_headers".into(),
            b"x-goog-pubsub-message-id:42\r\ntenant:acme".to_vec(),
        );
        let Letter::Dead(letter) = recognise(&unwrapped, Some(b"raw")) else {
            panic!("not recognised");
        };
        assert_eq!(letter.headers["x-goog-pubsub-message-id"], "42");
        assert_eq!(letter.headers["tenant"], "acme");
        assert_eq!(letter.headers.len(), 2);
        assert_eq!(letter.body, "raw");
        assert!(matches!(
            recognise(&dead(b"a"), Some(b"")),
            Letter::Dead(DeadLetter { .. })
        ));
        assert!(matches!(
            recognise(&dead(&[b'a'; 64]), Some(b"")),
            Letter::Dead(DeadLetter { .. })
        ));
        assert!(matches!(
            recognise(&dead(b"code_2"), Some(b"")),
            Letter::Dead(DeadLetter { .. })
        ));
    }

    #[test]
    fn a_record_that_is_not_a_dead_letter_is_foreign_saying_why() {
        let reason = |headers: &BTreeMap<String, Vec<u8>>, value: Option<&[u8]>| match recognise(
            headers, value,
        ) {
            Letter::Foreign(reason) => reason,
            other => panic!("recognised as {other:?}"),
        };
        assert_eq!(reason(&headers(&[]), Some(b"x")), "no pubsub.error header");
        for code in [&b""[..], b"Upper", b"with space", b"\xff", &[b'a'; 65]] {
            assert_eq!(
                reason(&dead(code), Some(b"x")),
                "pubsub.error is not an error code",
                "{code:?}"
            );
        }
        assert_eq!(
            reason(&headers(&[("pubsub.error", b"x")]), Some(b"x")),
            "no pubsub.error_message header"
        );
        assert_eq!(reason(&dead(b"x"), None), "no value (the original request)");
        let mut bad_block = dead(b"x");
        bad_block.insert("pubsub.request_headers".into(), b"no colon".to_vec());
        assert_eq!(
            reason(&bad_block, Some(b"x")),
            "pubsub.request_headers: line 1 is not name:value"
        );
        assert_eq!(
            reason(&headers(&[("pubsub.replay_of", b"0-1")]), None),
            "pubsub.replay_of is not PARTITION:OFFSET"
        );
        assert_eq!(
            reason(&headers(&[("pubsub.replay_of", b"\xff")]), None),
            "pubsub.replay_of is not PARTITION:OFFSET"
        );
    }

    #[test]
    fn a_marker_reads_back_as_written() {
        let message = ("projects/p/subscriptions/s".to_owned(), "42".to_owned());
        assert_eq!(
            recognise(&marker_headers((3, 17), Some(&message)), Some(b"")),
            Letter::Marker {
                of: (3, 17),
                message: Some(message),
            }
        );
        assert_eq!(
            recognise(&marker_headers((0, 0), None), None),
            Letter::Marker {
                of: (0, 0),
                message: None,
            }
        );
        let mut only_id = marker_headers((0, 1), None);
        only_id.insert("pubsub.message_id".into(), b"42".to_vec());
        assert!(matches!(
            recognise(&only_id, None),
            Letter::Marker { message: None, .. }
        ));
    }
}
