//! Trace continuation: the W3C Trace Context of a message published with OpenTelemetry, carried
//! by Pub/Sub in the attributes `googclient_traceparent` / `googclient_tracestate`, becomes the
//! record's `traceparent` / `tracestate` headers, so a Kafka consumer's trace continues the
//! publisher's. Only a valid context is written (W3C Trace Context,
//! <https://www.w3.org/TR/trace-context/#traceparent-header-field-values>): a malformed one
//! would break the consumer's extraction or forge a parent.

use std::collections::BTreeMap;

/// The attribute Pub/Sub client libraries write the publisher's `traceparent` under.
pub(crate) const ATTRIBUTE_TRACEPARENT: &str = "googclient_traceparent";
/// The attribute Pub/Sub client libraries write the publisher's `tracestate` under.
pub(crate) const ATTRIBUTE_TRACESTATE: &str = "googclient_tracestate";
/// The W3C header names.
pub(crate) const HEADER_TRACEPARENT: &str = "traceparent";
/// The W3C header names.
pub(crate) const HEADER_TRACESTATE: &str = "tracestate";

/// The most list members a `tracestate` may carry.
const TRACESTATE_MAX_MEMBERS: usize = 32;
/// The longest `tracestate` propagated (the spec's limit for what a vendor must pass on).
const TRACESTATE_MAX_BYTES: usize = 512;

/// The `traceparent` and, when valid too, `tracestate` headers for a message's attributes;
/// `None` when it carries no valid `googclient_traceparent`.
pub(crate) fn trace_headers(
    attributes: &BTreeMap<String, String>,
) -> Option<(String, Option<String>)> {
    let parent = attributes.get(ATTRIBUTE_TRACEPARENT)?;
    if !valid_traceparent(parent) {
        return None;
    }
    let state = attributes
        .get(ATTRIBUTE_TRACESTATE)
        .filter(|state| valid_tracestate(state))
        .cloned();
    Some((parent.clone(), state))
}

fn lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// `version-traceid-parentid-flags`, lowercase hex, ids not all zero, version not `ff`; a
/// version above `00` may append fields after a `-` (the spec's forward compatibility).
pub(crate) fn valid_traceparent(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let (version, trace_id, parent_id, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let fields_hex = [version, trace_id, parent_id, flags]
        .iter()
        .all(|field| lower_hex(field));
    let zero = |id: &[u8]| id.iter().all(|&c| c == b'0');
    let length_ok = match version {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    };
    fields_hex && version != b"ff" && !zero(trace_id) && !zero(parent_id) && length_ok
}

/// Up to 32 comma-separated `key=value` members (blank members allowed), at most 512 bytes.
pub(crate) fn valid_tracestate(value: &str) -> bool {
    if value.len() > TRACESTATE_MAX_BYTES {
        return false;
    }
    let mut members = 0;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some((key, state)) = member.split_once('=') else {
            return false;
        };
        if members > TRACESTATE_MAX_MEMBERS || !valid_key(key) || !valid_value(state) {
            return false;
        }
    }
    true
}

/// `simple-key` or `tenant@system` (lowercase, digits, `_-*/`).
fn valid_key(key: &str) -> bool {
    let part = |s: &str, max: usize, first_digit: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit && b[0].is_ascii_digit()))
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => part(key, 256, false),
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
    }
}

/// 1-256 printable ASCII characters but `,` and `=` (a trailing space is the list's optional
/// whitespace, trimmed with the member).
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_is_taken() {
        assert!(valid_traceparent(PARENT));
        // A later version may append fields.
        assert!(valid_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"
        ));
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn tracestate_follows_the_list_grammar() {
        for good in [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE",
            "tenant@vendor=x,,a-b_c*d/e=1",
            "",
        ] {
            assert!(valid_tracestate(good), "{good}");
        }
        let too_many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let just_enough = (0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(valid_tracestate(&just_enough));
        for bad in [
            "novalue",
            "Upper=x",
            "k=",
            "k=a,b=c=d",
            "@vendor=x",
            "tenant@Vendor=x",
            "tenant@1vendor=x",
            "k=\u{7f}",
            too_many.as_str(),
            &format!("k={}", "v".repeat(600)),
            &format!("k={}", "v".repeat(257)),
            &format!("{}=v", "k".repeat(257)),
        ] {
            assert!(!valid_tracestate(bad), "{bad}");
        }
        assert!(valid_tracestate(&format!("{}=v", "k".repeat(256))));
        assert!(valid_tracestate(&format!("k={}", "v".repeat(256))));
    }

    #[test]
    fn headers_come_from_the_googclient_attributes() {
        let mut attributes = BTreeMap::new();
        assert_eq!(trace_headers(&attributes), None);
        attributes.insert(ATTRIBUTE_TRACESTATE.to_owned(), "congo=t61".to_owned());
        assert_eq!(trace_headers(&attributes), None);
        attributes.insert(ATTRIBUTE_TRACEPARENT.to_owned(), PARENT.to_owned());
        assert_eq!(
            trace_headers(&attributes),
            Some((PARENT.to_owned(), Some("congo=t61".to_owned())))
        );
        attributes.insert(ATTRIBUTE_TRACESTATE.to_owned(), "Bad".to_owned());
        assert_eq!(trace_headers(&attributes), Some((PARENT.to_owned(), None)));
        attributes.insert(ATTRIBUTE_TRACEPARENT.to_owned(), "00-bad".to_owned());
        assert_eq!(trace_headers(&attributes), None);
    }
}
