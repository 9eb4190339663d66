//! What Pub/Sub sends and what Kafka's Java client would do: push envelopes and the
//! default partitioner, written out independently of the bridge.

use super::*;

/// A push envelope as Pub/Sub sends it.
pub fn envelope(
    data: &[u8],
    attributes: &[(String, String)],
    message_id: &str,
    publish_time: &str,
    ordering_key: Option<&str>,
) -> Value {
    use base64::Engine as _;
    let mut message = json!({
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    });
    if !attributes.is_empty() {
        message["attributes"] = attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
    }
    if let Some(key) = ordering_key {
        message["orderingKey"] = Value::String(key.to_owned());
    }
    json!({ "message": message, "subscription": "projects/test-project/subscriptions/bridge-sub" })
}

/// Kafka's Java default partitioner, computed independently of the bridge's code for checks.
pub fn java_partition(key: &[u8], partitions: u32) -> u32 {
    // Same algorithm as Kafka's Utils.murmur2, written out again so a bug in the bridge's copy shows.
    let m: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let len4 = key.len() / 4;
    for i in 0..len4 {
        let b = &key[i * 4..i * 4 + 4];
        let mut k = (b[0] as u32) | (b[1] as u32) << 8 | (b[2] as u32) << 16 | (b[3] as u32) << 24;
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m) ^ k;
    }
    let rest = &key[len4 * 4..];
    match rest.len() {
        3 => {
            h ^= (rest[2] as u32) << 16;
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    (h & 0x7fff_ffff) % partitions
}
