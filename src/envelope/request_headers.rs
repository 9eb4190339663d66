//! The request headers an unwrapped push is read from, kept with its dead letter so that the
//! delivery can be read again (`pubsub-kafka-bridge replay`): a wrapped push carries everything
//! in its body, an unwrapped one its metadata (`x-goog-pubsub-*`) and attributes in headers.
//!
//! Kept as one block of `name:value` lines joined by CRLF. A header value holds neither CR nor
//! LF and a name no colon, so the block is lossless, repeated headers included (which a map of
//! record headers could not hold: a push refused for a repeated metadata header must still be
//! refused when it is read again), and an operator reads it as it arrived.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{PushPayload, UNWRAPPED_METADATA_HEADERS, is_attribute_header, reads_unwrapped};

/// The headers of a push read as unwrapped, as a block; `None` for a wrapped push, whose body
/// is the whole delivery. Credentials and transport headers are never kept.
pub(crate) fn kept(headers: &HeaderMap, payload: PushPayload) -> Option<Vec<u8>> {
    if !reads_unwrapped(headers, payload) {
        return None;
    }
    let mut block = Vec::new();
    let message_headers = headers.iter().filter(|(name, _)| {
        UNWRAPPED_METADATA_HEADERS.contains(&name.as_str()) || is_attribute_header(name.as_str())
    });
    for (name, value) in message_headers {
        if !block.is_empty() {
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(name.as_str().as_bytes());
        block.push(b':');
        block.extend_from_slice(value.as_bytes());
    }
    Some(block)
}

/// The headers of a block written by [`kept`], in their order; why not, for a block that is
/// not one.
pub(crate) fn restore(block: &[u8]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    if block.is_empty() {
        return Ok(headers);
    }
    for (index, line) in block.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line_number = index + 1;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("line {line_number} is not name:value"))?;
        let name = HeaderName::from_bytes(&line[..colon])
            .map_err(|_| format!("line {line_number} has no valid header name"))?;
        let value = HeaderValue::from_bytes(&line[colon + 1..])
            .map_err(|_| format!("line {line_number} has no valid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwrapped_push() -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer secret"),
            ("content-type", "application/octet-stream"),
            ("x-goog-pubsub-message-id", "42"),
            ("x-goog-pubsub-publish-time", "2024-01-01T00:00:00Z"),
            (
                "x-goog-pubsub-subscription-name",
                "projects/p/subscriptions/s",
            ),
            ("x-goog-pubsub-ordering-key", "k"),
            ("x-forwarded-for", "10.0.0.1"),
            ("tenant", "acme"),
            ("colour", " spaced: value "),
        ] {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers.append("tenant", HeaderValue::from_static("second"));
        headers
    }

    #[test]
    fn an_unwrapped_push_keeps_its_metadata_and_attributes_and_nothing_else() {
        let block = kept(&unwrapped_push(), PushPayload::Auto).unwrap();
        assert_eq!(
            String::from_utf8(block).unwrap(),
            "x-goog-pubsub-message-id:42\r\n\
             x-goog-pubsub-publish-time:2024-01-01T00:00:00Z\r\n\
             x-goog-pubsub-subscription-name:projects/p/subscriptions/s\r\n\
             x-goog-pubsub-ordering-key:k\r\n\
             tenant:acme\r\n\
             tenant:second\r\n\
             colour: spaced: value "
        );
    }

    #[test]
    fn a_wrapped_push_keeps_no_headers() {
        let mut headers = unwrapped_push();
        assert_eq!(kept(&headers, PushPayload::Wrapped), None);
        headers.remove("x-goog-pubsub-message-id");
        assert_eq!(kept(&headers, PushPayload::Auto), None);
        assert_eq!(
            kept(&HeaderMap::new(), PushPayload::Unwrapped).as_deref(),
            Some(&b""[..])
        );
    }

    #[test]
    fn a_kept_block_restores_the_message_headers_exactly() {
        let original = unwrapped_push();
        let restored = restore(&kept(&original, PushPayload::Auto).unwrap()).unwrap();
        let message = |headers: &HeaderMap| {
            super::super::parse_push(headers, b"data", PushPayload::Auto, chrono::Utc::now)
        };
        assert_eq!(message(&restored), message(&original));
        assert_eq!(restored.get_all("tenant").iter().count(), 2);
        assert_eq!(restored["colour"], " spaced: value ");
        assert!(restored.get("authorization").is_none());
        assert!(restore(b"").unwrap().is_empty());
    }

    #[test]
    fn a_block_that_is_not_one_is_refused_naming_the_line() {
        assert_eq!(
            restore(b"a:1\r\nno colon").unwrap_err(),
            "line 2 is not name:value"
        );
        assert_eq!(
            restore(b"bad name:1").unwrap_err(),
            "line 1 has no valid header name"
        );
        assert_eq!(
            restore(b"a:\x7f").unwrap_err(),
            "line 1 has no valid header value"
        );
        assert_eq!(restore(b"a:1\nb:2").unwrap().len(), 2);
    }
}
