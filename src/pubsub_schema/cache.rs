//! The revisions read so far: bounded, never stale (a revision never changes), and one fetch
//! per revision at a time, shared by every delivery waiting for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::PubsubSchemaError;

/// A fetch's outcome as its waiters see it (`None` while it runs).
type Outcome<V> = Option<Result<V, PubsubSchemaError>>;

/// Where one revision stands.
enum Slot<V> {
    /// Read: kept until the cache is full and it is the least recently used.
    Ready {
        value: V,
        /// The cache's clock when it was last handed out.
        used: u64,
    },
    /// One fetch runs; every delivery for the revision waits on it and shares its outcome.
    Fetching(tokio::sync::watch::Receiver<Outcome<V>>),
}

struct State<V> {
    slots: HashMap<String, Slot<V>>,
    /// Ticks on every use; orders the ready slots by recency.
    clock: u64,
    /// Slots that are [`Slot::Ready`].
    ready: usize,
}

/// At most `capacity` revisions, fetched once each.
///
/// The map is locked only to look up or update a slot, never across I/O: a slow fetch holds
/// up only the deliveries that need its revision. A failed fetch is forgotten, so the next
/// delivery for the revision tries again; what a fetch returns as `Ok` (a compiled schema, or
/// a definition the bridge refuses, which is as immutable as the revision) is kept.
pub(crate) struct RevisionCache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for RevisionCache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<V> {
    capacity: usize,
    state: Mutex<State<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V: Clone + Send + Sync + 'static> RevisionCache<V> {
    /// An empty cache holding at most `capacity` (at least 1) revisions.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                state: Mutex::new(State {
                    slots: HashMap::new(),
                    clock: 0,
                    ready: 0,
                }),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// Lookups answered from the cache.
    pub(crate) fn hits(&self) -> u64 {
        self.inner.hits.load(Ordering::Relaxed)
    }

    /// Lookups that fetched, or waited for a fetch.
    pub(crate) fn misses(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }

    /// Revisions held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().ready
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<V>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `key`: the cached one, the outcome of the fetch already running, or the
    /// outcome of `fetch`, started now in a task of its own (so a delivery that gives up
    /// waiting does not abandon the other waiters).
    pub(crate) async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<V, PubsubSchemaError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, PubsubSchemaError>> + Send + 'static,
    {
        let mut outcome = {
            let mut state = self.lock();
            state.clock += 1;
            let now = state.clock;
            match state.slots.get_mut(key) {
                Some(Slot::Ready { value, used }) => {
                    *used = now;
                    self.inner.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(value.clone());
                }
                Some(Slot::Fetching(outcome)) => outcome.clone(),
                None => {
                    let (report, outcome) = tokio::sync::watch::channel(None);
                    state
                        .slots
                        .insert(key.to_owned(), Slot::Fetching(outcome.clone()));
                    let cache = self.clone();
                    let key = key.to_owned();
                    let fetching = fetch();
                    tokio::spawn(async move {
                        let result = fetching.await;
                        cache.settle(key, &result);
                        report.send_replace(Some(result));
                    });
                    outcome
                }
            }
        };
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let shared = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
        match shared {
            Ok(Some(result)) => result,
            // The fetch task ended without reporting (the runtime is shutting down).
            _ => Err(PubsubSchemaError::Unavailable {
                revision: crate::echo::bounded_echo(key),
                reason: "fetch abandoned".to_owned(),
            }),
        }
    }

    /// Keeps a fetched value (evicting the least recently used one when full) or forgets a
    /// failed fetch.
    fn settle(&self, key: String, result: &Result<V, PubsubSchemaError>) {
        let mut state = self.lock();
        match result {
            Ok(value) => {
                if state.ready >= self.inner.capacity {
                    let oldest = state
                        .slots
                        .iter()
                        .filter_map(|(key, slot)| match slot {
                            Slot::Ready { used, .. } => Some((*used, key)),
                            Slot::Fetching(_) => None,
                        })
                        .min()
                        .map(|(_, key)| key.clone());
                    if let Some(oldest) = oldest {
                        state.slots.remove(&oldest);
                        state.ready -= 1;
                    }
                }
                let used = state.clock;
                state.slots.insert(
                    key,
                    Slot::Ready {
                        value: value.clone(),
                        used,
                    },
                );
                state.ready += 1;
            }
            Err(_) => {
                state.slots.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    fn unavailable() -> PubsubSchemaError {
        PubsubSchemaError::Unavailable {
            revision: "r".into(),
            reason: "down".into(),
        }
    }

    /// A fetch that counts itself and answers `value` after `delay` (paused time).
    fn counted(
        fetches: &Arc<AtomicUsize>,
        delay: Duration,
        value: Result<u32, PubsubSchemaError>,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, PubsubSchemaError>> + Send>>
    {
        let fetches = Arc::clone(fetches);
        move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                value
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_for_one_revision_share_one_fetch() {
        let cache = RevisionCache::<u32>::new(4);
        let fetches = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), Arc::clone(&fetches));
                tokio::spawn(async move {
                    cache
                        .get("a@1", counted(&fetches, Duration::from_secs(1), Ok(7)))
                        .await
                })
            })
            .collect();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap().unwrap(), 7);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!((cache.hits(), cache.misses()), (0, 10));
        let again = cache.get("a@1", counted(&fetches, Duration::ZERO, Ok(8)));
        assert_eq!(again.await.unwrap(), 7, "a revision never changes");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!((cache.hits(), cache.misses()), (1, 10));
    }

    #[tokio::test(start_paused = true)]
    async fn revisions_in_flight_at_once_are_fetched_once_each() {
        let cache = RevisionCache::<u32>::new(4);
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for round in 0..3 {
            for (key, value) in [("a@1", 1), ("a@2", 2), ("b@1", 3)] {
                let (cache, fetches) = (cache.clone(), Arc::clone(&fetches));
                waiters.push(tokio::spawn(async move {
                    let delay = Duration::from_millis(100 * (3 - round));
                    (
                        value,
                        cache.get(key, counted(&fetches, delay, Ok(value))).await,
                    )
                }));
            }
        }
        for waiter in waiters {
            let (expected, got) = waiter.await.unwrap();
            assert_eq!(got.unwrap(), expected);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fetch_is_shared_then_forgotten() {
        let cache = RevisionCache::<u32>::new(4);
        let fetches = Arc::new(AtomicUsize::new(0));
        let (first, second) = tokio::join!(
            cache.get(
                "a@1",
                counted(&fetches, Duration::from_secs(1), Err(unavailable()))
            ),
            cache.get("a@1", counted(&fetches, Duration::ZERO, Ok(1))),
        );
        assert_eq!(first.unwrap_err().code(), "schema_api_unavailable");
        assert_eq!(second.unwrap_err().code(), "schema_api_unavailable");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.len(), 0);
        let retried = cache.get("a@1", counted(&fetches, Duration::ZERO, Ok(1)));
        assert_eq!(retried.await.unwrap(), 1);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_the_fetch_to_finish() {
        let cache = RevisionCache::<u32>::new(4);
        let fetches = Arc::new(AtomicUsize::new(0));
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            cache.get("a@1", counted(&fetches, Duration::from_secs(1), Ok(5))),
        )
        .await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = cache.get("a@1", counted(&fetches, Duration::ZERO, Ok(6)));
        assert_eq!(later.await.unwrap(), 5);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_revision_goes_when_full() {
        let cache = RevisionCache::<u32>::new(2);
        let fetches = Arc::new(AtomicUsize::new(0));
        let get = |key: &'static str, value: u32| {
            let (cache, fetches) = (cache.clone(), Arc::clone(&fetches));
            async move {
                cache
                    .get(key, counted(&fetches, Duration::ZERO, Ok(value)))
                    .await
            }
        };
        assert_eq!(get("a", 1).await.unwrap(), 1);
        assert_eq!(get("b", 2).await.unwrap(), 2);
        assert_eq!(get("a", 0).await.unwrap(), 1, "a is used again: b is older");
        assert_eq!(get("c", 3).await.unwrap(), 3);
        assert_eq!(cache.len(), 2);
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert_eq!(get("a", 0).await.unwrap(), 1, "a stayed");
        assert_eq!(get("c", 0).await.unwrap(), 3, "c stayed");
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert_eq!(
            get("b", 4).await.unwrap(),
            4,
            "b was evicted and is fetched again"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
        assert_eq!(cache.len(), 2);
    }
}
