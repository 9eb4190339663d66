//! Redeliveries suppressed on this instance: per subscription, the message ids whose records
//! Kafka acknowledged, and the ones in flight, whose copies wait for the first's outcome rather
//! than write again.
//!
//! Pub/Sub redelivers a message that got no 2xx within its ack deadline, and a produce answered
//! 503 after `KAFKA_PRODUCE_TIMEOUT_MS` may still land afterwards: without this, the redelivery
//! writes the record a second time. The producer reports a record's final outcome to its
//! [`Ticket`] whenever it comes, so an acknowledgement that arrives after the delivery was
//! answered is remembered as well. At most `DEDUP_CACHE_ENTRIES` acknowledged ids are kept per
//! subscription, the oldest forgotten first. Nothing here is shared between instances or
//! survives a restart (docs/delivery-guarantees.md says what that leaves to consumers).

pub(crate) mod settings;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::kafka::{Ack, KafkaError};

/// foldhash, not std's SipHash: two lookups per delivery on the hot path; seeded at random per
/// process, so nobody can choose ids that collide.
type Hasher = foldhash::fast::RandomState;

/// What a delivery of a message does, given the copies of it this instance has seen.
#[derive(Debug)]
pub enum Claim {
    /// No copy acknowledged or in flight: produce the record and hand Kafka's outcome to the
    /// ticket (`None`: deduplication is off, or the message has no id).
    Produce(Option<Ticket>),
    /// Kafka acknowledged a copy's record: answer 2xx without writing.
    Duplicate,
    /// The copy in flight failed with this: the same answer. Its record may still have been
    /// written, so the copy does not write another; Pub/Sub's redelivery, after its backoff,
    /// finds the id remembered or forgotten.
    Failed(KafkaError),
    /// The copy in flight had no outcome within the patience given.
    Unsettled,
}

/// A copy's record's final outcome, as the copies waiting for it learn it.
#[derive(Debug, Clone)]
enum Outcome {
    Acknowledged,
    Failed(KafkaError),
}

/// The message ids of every subscription; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    /// `None` when `DEDUP_CACHE_ENTRIES=0`.
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Acknowledged ids remembered per subscription.
    capacity: usize,
    subscriptions: Mutex<HashMap<Arc<str>, Seen, Hasher>>,
}

/// One subscription's message ids.
#[derive(Debug)]
struct Seen {
    /// The subscription's name, shared with the tickets of its deliveries.
    name: Arc<str>,
    acknowledged: HashSet<Arc<str>, Hasher>,
    /// The acknowledged ids, oldest first: the next one forgotten is at the front.
    oldest_first: VecDeque<Arc<str>>,
    /// Ids being produced, with the copies waiting for the outcome.
    in_flight: HashMap<Arc<str>, Vec<oneshot::Sender<Outcome>>, Hasher>,
}

impl Seen {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            acknowledged: HashSet::default(),
            oldest_first: VecDeque::new(),
            in_flight: HashMap::default(),
        }
    }

    /// Remembers `id` as acknowledged, forgetting the oldest beyond `capacity`.
    fn remember(&mut self, id: Arc<str>, capacity: usize) {
        if self.acknowledged.insert(Arc::clone(&id)) {
            self.oldest_first.push_back(id);
        }
        while self.oldest_first.len() > capacity {
            if let Some(oldest) = self.oldest_first.pop_front() {
                self.acknowledged.remove(&oldest);
            }
        }
    }
}

/// What [`Inner::claim_now`] found.
enum Step {
    Produce(Ticket),
    /// Produce without a claim (the safe side, should the subscription's entry be missing).
    Unclaimed,
    Duplicate,
    Wait(oneshot::Receiver<Outcome>),
}

impl Dedup {
    /// Remembers up to `capacity` acknowledged ids per subscription; 0 remembers none and
    /// lets every copy write.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: (capacity > 0).then(|| {
                Arc::new(Inner {
                    capacity,
                    subscriptions: Mutex::default(),
                })
            }),
        }
    }

    /// What a delivery of `message_id` from `subscription` does. A copy in flight is waited for
    /// at most `patience`; one that never reached Kafka (its delivery gone before the record was
    /// handed over) leaves this delivery to produce.
    pub async fn claim(&self, subscription: &str, message_id: &str, patience: Duration) -> Claim {
        let Some(inner) = &self.inner else {
            return Claim::Produce(None);
        };
        if message_id.is_empty() {
            return Claim::Produce(None);
        }
        let mut deadline = None;
        loop {
            let outcome = match inner.claim_now(subscription, message_id) {
                Step::Produce(ticket) => return Claim::Produce(Some(ticket)),
                Step::Unclaimed => return Claim::Produce(None),
                Step::Duplicate => return Claim::Duplicate,
                Step::Wait(outcome) => outcome,
            };
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + patience);
            match tokio::time::timeout_at(deadline, outcome).await {
                Ok(Ok(Outcome::Acknowledged)) => return Claim::Duplicate,
                Ok(Ok(Outcome::Failed(error))) => return Claim::Failed(error),
                Ok(Err(_never_produced)) => {}
                Err(_elapsed) => return Claim::Unsettled,
            }
        }
    }

    /// Acknowledged ids remembered for `subscription` (tests, `examples/dedup_memory.rs`).
    pub fn remembered(&self, subscription: &str) -> usize {
        self.inner.as_ref().map_or(0, |inner| {
            inner
                .lock()
                .get(subscription)
                .map_or(0, |seen| seen.acknowledged.len())
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Seen, Hasher>> {
        // Every update leaves the maps consistent, so a panic elsewhere poisons nothing here.
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn claim_now(self: &Arc<Self>, subscription: &str, message_id: &str) -> Step {
        let mut subscriptions = self.lock();
        if !subscriptions.contains_key(subscription) {
            let name: Arc<str> = Arc::from(subscription);
            subscriptions.insert(Arc::clone(&name), Seen::new(name));
        }
        let Some(seen) = subscriptions.get_mut(subscription) else {
            return Step::Unclaimed; // inserted above, under the same lock
        };
        if seen.acknowledged.contains(message_id) {
            return Step::Duplicate;
        }
        if let Some(waiting) = seen.in_flight.get_mut(message_id) {
            let (tell, outcome) = oneshot::channel();
            waiting.push(tell);
            return Step::Wait(outcome);
        }
        let id: Arc<str> = Arc::from(message_id);
        seen.in_flight.insert(Arc::clone(&id), Vec::new());
        Step::Produce(Ticket {
            inner: Arc::clone(self),
            subscription: Arc::clone(&seen.name),
            id,
            settled: false,
        })
    }

    /// Ends `id`'s flight: remembered when acknowledged, and the waiting copies told. `None`:
    /// the record never reached Kafka, and the waiting copies go on as the first.
    fn settle(&self, subscription: &str, id: &Arc<str>, outcome: Option<Outcome>) {
        let mut subscriptions = self.lock();
        let Some(seen) = subscriptions.get_mut(subscription) else {
            return;
        };
        let waiting = seen.in_flight.remove(&**id).unwrap_or_default();
        if let Some(Outcome::Acknowledged) = outcome {
            seen.remember(Arc::clone(id), self.capacity);
        }
        drop(subscriptions);
        if let Some(outcome) = outcome {
            for tell in waiting {
                let _ = tell.send(outcome.clone());
            }
        }
    }
}

/// The first copy's claim on its message id: settled with Kafka's outcome for its record.
/// Dropped unsettled (the record never reached Kafka), it lets the waiting copies produce.
#[derive(Debug)]
pub struct Ticket {
    inner: Arc<Inner>,
    subscription: Arc<str>,
    id: Arc<str>,
    settled: bool,
}

impl Ticket {
    /// Kafka's final answer for the record, whenever it comes (after the delivery was answered
    /// too): an acknowledged id is remembered, and the copies waiting share the answer.
    pub fn settle(mut self, result: &Result<Ack, KafkaError>) {
        let outcome = match result {
            Ok(_) => Outcome::Acknowledged,
            Err(error) => Outcome::Failed(error.clone()),
        };
        self.settled = true;
        self.inner
            .settle(&self.subscription, &self.id, Some(outcome));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.inner.settle(&self.subscription, &self.id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "projects/p/subscriptions/s";
    const PATIENCE: Duration = Duration::from_secs(10);

    fn ack() -> Result<Ack, KafkaError> {
        Ok(Ack {
            partition: 0,
            offset: 7,
        })
    }

    fn failure() -> Result<Ack, KafkaError> {
        Err(KafkaError::Unavailable("down".into()))
    }

    async fn ticket(dedup: &Dedup, subscription: &str, id: &str) -> Ticket {
        match dedup.claim(subscription, id, PATIENCE).await {
            Claim::Produce(Some(ticket)) => ticket,
            other => panic!("{id}: expected to produce, got {other:?}"),
        }
    }

    async fn is_duplicate(dedup: &Dedup, subscription: &str, id: &str) -> bool {
        match dedup.claim(subscription, id, PATIENCE).await {
            Claim::Duplicate => true,
            Claim::Produce(Some(ticket)) => {
                drop(ticket);
                false
            }
            other => panic!("{id}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_acknowledged_id_is_a_duplicate_and_a_failed_one_is_not() {
        let dedup = Dedup::new(8);
        ticket(&dedup, SUB, "1").await.settle(&ack());
        ticket(&dedup, SUB, "2").await.settle(&failure());
        assert!(is_duplicate(&dedup, SUB, "1").await);
        assert!(!is_duplicate(&dedup, SUB, "2").await);
        assert!(!is_duplicate(&dedup, SUB, "3").await);
        assert_eq!(dedup.remembered(SUB), 1);
    }

    #[tokio::test]
    async fn ids_are_remembered_per_subscription() {
        let dedup = Dedup::new(8);
        ticket(&dedup, SUB, "1").await.settle(&ack());
        // Two subscriptions of one topic deliver the same id, each legitimately.
        assert!(!is_duplicate(&dedup, "projects/p/subscriptions/other", "1").await);
        assert!(is_duplicate(&dedup, SUB, "1").await);
        assert_eq!(dedup.remembered("projects/p/subscriptions/other"), 0);
    }

    #[tokio::test]
    async fn the_bound_forgets_the_oldest_first() {
        let dedup = Dedup::new(3);
        for id in ["1", "2", "3", "4"] {
            ticket(&dedup, SUB, id).await.settle(&ack());
        }
        assert_eq!(dedup.remembered(SUB), 3);
        assert!(
            !is_duplicate(&dedup, SUB, "1").await,
            "the oldest is forgotten"
        );
        for id in ["2", "3", "4"] {
            assert!(is_duplicate(&dedup, SUB, id).await, "{id}");
        }
        // An id acknowledged twice (forgotten in between) is counted once.
        ticket(&dedup, SUB, "1").await.settle(&ack());
        assert_eq!(dedup.remembered(SUB), 3);
        assert!(!is_duplicate(&dedup, SUB, "2").await, "now the oldest");
    }

    #[tokio::test]
    async fn zero_entries_or_no_id_claims_nothing() {
        let off = Dedup::new(0);
        for _ in 0..2 {
            assert!(matches!(
                off.claim(SUB, "1", PATIENCE).await,
                Claim::Produce(None)
            ));
        }
        assert_eq!(off.remembered(SUB), 0);
        let on = Dedup::new(8);
        assert!(matches!(
            on.claim(SUB, "", PATIENCE).await,
            Claim::Produce(None)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_in_flight_shares_the_first_ones_acknowledgement() {
        let dedup = Dedup::new(8);
        let first = ticket(&dedup, SUB, "1").await;
        let copy = tokio::spawn({
            let dedup = dedup.clone();
            async move { dedup.claim(SUB, "1", PATIENCE).await }
        });
        tokio::time::sleep(PATIENCE / 2).await;
        assert!(!copy.is_finished(), "the copy waits for the first");
        first.settle(&ack());
        assert!(matches!(copy.await.unwrap(), Claim::Duplicate));
        assert!(is_duplicate(&dedup, SUB, "1").await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_in_flight_answers_the_first_ones_failure_and_writes_nothing() {
        let dedup = Dedup::new(8);
        let first = ticket(&dedup, SUB, "1").await;
        let copy = tokio::spawn({
            let dedup = dedup.clone();
            async move { dedup.claim(SUB, "1", PATIENCE).await }
        });
        tokio::task::yield_now().await;
        first.settle(&failure());
        assert!(matches!(
            copy.await.unwrap(),
            Claim::Failed(KafkaError::Unavailable(_))
        ));
        // Neither remembered nor in flight: the next redelivery writes.
        assert!(!is_duplicate(&dedup, SUB, "1").await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_waits_no_longer_than_its_patience() {
        let dedup = Dedup::new(8);
        let first = ticket(&dedup, SUB, "1").await;
        let started = tokio::time::Instant::now();
        assert!(matches!(
            dedup.claim(SUB, "1", PATIENCE).await,
            Claim::Unsettled
        ));
        assert_eq!(started.elapsed(), PATIENCE);
        // Acknowledged after every copy gave up (the produce timed out, its record landed
        // later): still remembered.
        first.settle(&ack());
        assert!(is_duplicate(&dedup, SUB, "1").await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_copy_that_never_reached_kafka_leaves_the_copy_to_produce() {
        let dedup = Dedup::new(8);
        let first = ticket(&dedup, SUB, "1").await;
        let copy = tokio::spawn({
            let dedup = dedup.clone();
            async move { dedup.claim(SUB, "1", PATIENCE).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        let Claim::Produce(Some(second)) = copy.await.unwrap() else {
            panic!("the copy goes on as the first");
        };
        second.settle(&ack());
        assert!(is_duplicate(&dedup, SUB, "1").await);
    }
}
