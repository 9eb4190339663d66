//! A bounded least-recently-used map from token to verdict, with expiry; pure (time passed in).
//!
//! Pub/Sub reuses one token for many deliveries, so the RSA check runs once per token. The
//! bound keeps a flood of distinct tokens from growing memory, and least-recently-used
//! eviction keeps the token in constant use (the real push token) while one-off tokens go.

use std::collections::HashMap;
use std::sync::Arc;

/// How long any verdict is kept at most, whatever `exp` says (Google tokens live one hour).
pub(crate) const MAX_TTL_SECONDS: u64 = 3_600;

struct Entry<V> {
    value: V,
    expires_at: u64,
    last_used: u64,
}

impl<V> std::fmt::Debug for TokenCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Token → verdict, at most `capacity` entries.
pub(crate) struct TokenCache<V> {
    capacity: usize,
    /// foldhash, not std's SipHash: a token is ~900 bytes and is hashed on every delivery
    /// (docs/decisions/hasher.md).
    entries: HashMap<Arc<[u8]>, Entry<V>, foldhash::fast::RandomState>,
    /// Monotonic use counter: the entry with the smallest `last_used` is the least recent.
    clock: u64,
    /// Lookups that found a live verdict, and lookups that did not (metrics). Plain counts:
    /// the cache is only used under its owner's lock.
    hits: u64,
    misses: u64,
}

impl<V: Clone> TokenCache<V> {
    /// An empty cache holding at most `capacity` (at least 1) tokens.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::default(),
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// The verdict for `token` if it is cached and not expired at `now`.
    pub(crate) fn get(&mut self, token: &[u8], now: u64) -> Option<V> {
        let Some(entry) = self.entries.get_mut(token) else {
            self.misses += 1;
            return None;
        };
        if entry.expires_at <= now {
            self.entries.remove(token);
            self.misses += 1;
            return None;
        }
        self.hits += 1;
        self.clock += 1;
        entry.last_used = self.clock;
        Some(entry.value.clone())
    }

    /// Keeps `value` for `token` until `expires_at` (capped at [`MAX_TTL_SECONDS`] from `now`).
    /// When full, expired entries go first, then the least recently used one.
    pub(crate) fn insert(&mut self, token: &[u8], value: V, expires_at: u64, now: u64) {
        let expires_at = expires_at.min(now.saturating_add(MAX_TTL_SECONDS));
        if expires_at <= now {
            return;
        }
        if !self.entries.contains_key(token) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires_at > now);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(token, _)| Arc::clone(token));
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.clock += 1;
        self.entries.insert(
            Arc::from(token),
            Entry {
                value,
                expires_at,
                last_used: self.clock,
            },
        );
    }

    /// `(hits, misses)` of [`TokenCache::get`] so far.
    pub(crate) fn lookups(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Tokens held (expired ones included until they are touched or evicted).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sharing_their_signature_end_are_still_told_apart() {
        let tail = "s".repeat(32);
        let (a, b) = (format!("header.aaaa.{tail}"), format!("header.bbbb.{tail}"));
        let mut cache = TokenCache::new(4);
        cache.insert(a.as_bytes(), 1, 100, 0);
        assert_eq!(cache.get(b.as_bytes(), 0), None, "different token");
        cache.insert(b.as_bytes(), 2, 100, 0);
        assert_eq!(
            (cache.get(a.as_bytes(), 0), cache.get(b.as_bytes(), 0)),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn keeps_a_verdict_until_it_expires() {
        let mut cache = TokenCache::new(4);
        assert_eq!(cache.get(b"a", 100), None);
        cache.insert(b"a", 1, 200, 100);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(b"a", 100), Some(1));
        assert_eq!(cache.get(b"a", 199), Some(1));
        assert_eq!(cache.get(b"a", 200), None, "expired at expires_at");
        assert_eq!(cache.len(), 0, "an expired entry is dropped when touched");
        assert!(cache.is_empty());
    }

    #[test]
    fn never_keeps_what_is_already_expired_and_caps_the_lifetime() {
        let mut cache = TokenCache::new(4);
        cache.insert(b"past", 1, 100, 100);
        assert!(cache.is_empty());
        cache.insert(b"forever", 2, u64::MAX, 100);
        assert_eq!(cache.get(b"forever", 100 + MAX_TTL_SECONDS - 1), Some(2));
        assert_eq!(cache.get(b"forever", 100 + MAX_TTL_SECONDS), None);
        cache.insert(b"late", 3, u64::MAX, u64::MAX - 1);
        assert_eq!(
            cache.get(b"late", u64::MAX - 1),
            Some(3),
            "no overflow near the end of time"
        );
    }

    #[test]
    fn evicts_the_least_recently_used_when_full() {
        let mut cache = TokenCache::new(3);
        cache.insert(b"push", 0, 10_000, 0);
        for i in 0..100 {
            // The real token stays in use while one-off tokens stream through.
            assert_eq!(cache.get(b"push", 1), Some(0), "round {i}");
            cache.insert(format!("other-{i}").as_bytes(), 1, 10_000, 1);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(b"other-99", 1), Some(1));
        assert_eq!(cache.get(b"other-98", 1), Some(1));
        assert_eq!(cache.get(b"other-97", 1), None, "least recent went");
    }

    #[test]
    fn expired_entries_go_before_live_ones() {
        let mut cache = TokenCache::new(2);
        cache.insert(b"live", 0, 1_000, 0);
        cache.insert(b"short", 1, 10, 0);
        cache.get(b"short", 5);
        cache.insert(b"new", 2, 1_000, 20);
        assert_eq!(
            cache.get(b"live", 20),
            Some(0),
            "live kept although least recently used"
        );
        assert_eq!(cache.get(b"new", 20), Some(2));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn replacing_a_token_does_not_evict_another() {
        let mut cache = TokenCache::new(2);
        cache.insert(b"a", 0, 1_000, 0);
        cache.insert(b"b", 1, 1_000, 0);
        assert!(!cache.is_empty());
        // "b" is the most recent: replacing it must not push out "a", the least recent.
        cache.insert(b"b", 3, 1_000, 0);
        cache.insert(b"a", 2, 1_000, 0);
        assert_eq!(cache.get(b"a", 0), Some(2));
        assert_eq!(cache.get(b"b", 0), Some(3));
    }

    #[test]
    fn an_entry_expiring_at_the_insert_is_dropped_before_a_live_one_is_evicted() {
        let mut cache = TokenCache::new(2);
        cache.insert(b"live", 0, 100, 0);
        cache.insert(b"ending", 1, 10, 0);
        // At 10 "ending" is expired (as `get` sees it), so it goes, not the older "live".
        cache.insert(b"new", 2, 100, 10);
        assert_eq!(cache.get(b"live", 10), Some(0));
        assert_eq!(cache.get(b"new", 10), Some(2));
    }

    #[test]
    fn an_insert_below_capacity_keeps_everything_it_holds() {
        let mut cache = TokenCache::new(4);
        cache.insert(b"short", 0, 10, 0);
        cache.insert(b"long", 1, 100, 50);
        // Nothing is scanned or dropped until the cache is full.
        assert_eq!(cache.len(), 2);
    }

    /// Entries that tie on recency would be evicted in the map's (random) iteration order, so
    /// each case runs on many fresh maps: a use or an insert that fails to move the clock shows
    /// as a wrong eviction in almost every run.
    #[test]
    fn recency_is_exact_whatever_the_hash_order() {
        for round in 0..64 {
            let mut cache = TokenCache::new(2);
            cache.insert(b"first", 0, 1_000, 0);
            cache.insert(b"second", 1, 1_000, 0);
            cache.insert(b"third", 2, 1_000, 0);
            assert_eq!(
                cache.get(b"first", 0),
                None,
                "round {round}: oldest insert evicted"
            );
            assert_eq!(cache.get(b"second", 0), Some(1), "round {round}");

            let mut cache = TokenCache::new(3);
            for (i, token) in [b"a", b"b", b"c"].into_iter().enumerate() {
                cache.insert(token, i, 1_000, 0);
            }
            cache.get(b"a", 0);
            cache.get(b"b", 0);
            cache.insert(b"d", 3, 1_000, 0);
            assert_eq!(
                cache.get(b"c", 0),
                None,
                "round {round}: the one not used went"
            );
            assert_eq!(
                (cache.get(b"a", 0), cache.get(b"b", 0), cache.get(b"d", 0)),
                (Some(0), Some(1), Some(3)),
                "round {round}"
            );
        }
    }

    #[test]
    fn counts_lookups_that_find_a_live_verdict_and_those_that_do_not() {
        let mut cache = TokenCache::new(4);
        assert_eq!(cache.lookups(), (0, 0));
        cache.get(b"a", 0);
        cache.insert(b"a", 1, 100, 0);
        cache.get(b"a", 10);
        cache.get(b"a", 99);
        cache.get(b"b", 99);
        cache.get(b"a", 100); // expired
        assert_eq!(cache.lookups(), (2, 3));
    }

    #[test]
    fn capacity_is_at_least_one() {
        let mut cache = TokenCache::new(0);
        cache.insert(b"a", 0, 1_000, 0);
        assert_eq!(cache.get(b"a", 0), Some(0));
        cache.insert(b"b", 1, 1_000, 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(b"b", 0), Some(1));
    }
}
