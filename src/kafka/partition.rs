//! Partition choice: Kafka's Java default partitioner for keyed records; an unkeyed record by
//! the same formula over its message id, so every copy of a message lands in one partition and a
//! per-partition deduplicating consumer sees them all; round robin only when the id is unknown.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's `Utils.murmur2`, bit for bit (seed `0x9747b28c`), so keys land where Java producers put them.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        // Java's switch falls through: byte 2, then 1, then 0, then one multiply.
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub(crate) fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) as u32 % partitions.max(1)
}

/// Spreads unkeyed records over partitions, one after another.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin(AtomicU32);

impl RoundRobin {
    /// The next partition out of `partitions`.
    pub(crate) fn next(&self, partitions: u32) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed) % partitions.max(1)
    }
}

/// Where a record goes: its key's partition, else its message id's (the same formula), else the
/// next one in turn (an unwrapped push without metadata carries no message id).
pub(crate) fn choose_partition(
    key: Option<&[u8]>,
    message_id: Option<&str>,
    partitions: u32,
    unkeyed: &RoundRobin,
) -> u32 {
    match (key, message_id) {
        (Some(key), _) => partition_for_key(key, partitions),
        (None, Some(id)) => partition_for_key(id.as_bytes(), partitions),
        (None, None) => unkeyed.next(partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Apache Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_utils_test() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn keyed_partition_is_to_positive_murmur2_mod_count() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
    }

    #[test]
    fn records_without_key_or_message_id_cycle_over_every_partition() {
        let rr = RoundRobin::default();
        let picks: Vec<u32> = (0..6)
            .map(|_| choose_partition(None, None, 3, &rr))
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn an_unkeyed_record_goes_where_its_message_id_would_as_a_key() {
        let rr = RoundRobin::default();
        // toPositive(murmur2("foobar")) % 50 = 16 (above); the same every time, whatever the
        // round robin's position.
        for _ in 0..3 {
            assert_eq!(choose_partition(None, Some("foobar"), 50, &rr), 16);
        }
        assert_eq!(rr.next(7), 0, "the round robin was not consulted");
        // A key wins over the message id.
        assert_eq!(
            choose_partition(Some(b"foobar"), Some("21"), 50, &rr),
            partition_for_key(b"foobar", 50)
        );
        assert_ne!(
            partition_for_key(b"foobar", 50),
            partition_for_key(b"21", 50)
        );
    }
}
