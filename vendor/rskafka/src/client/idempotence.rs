//! The idempotent producer (patched, see PATCHED.md): the client's producer id, and each
//! partition's sequence numbers.
//!
//! KIP-98 (<https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging>):
//! a producer asks for a producer id and epoch (InitProducerId, API key 22) and writes them into
//! every record batch, with the batch's base sequence: per partition, the first batch starts at
//! 0 and each next one at the previous one's plus its record count. The broker appends a batch
//! only with the next sequence it expects for that producer and partition; a batch sent again
//! after its answer was lost carries its same sequence and is recognised as a duplicate instead
//! of being appended twice.
//!
//! When the broker no longer accepts the producer's sequence (OUT_OF_ORDER_SEQUENCE_NUMBER,
//! UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH, PRODUCER_FENCED), or a batch's outcome stays
//! unknown (its produce timed out or was cancelled, so the next sequence the broker expects is
//! unknown), the partition starts again at sequence 0 under a new producer id, as KIP-360
//! (<https://cwiki.apache.org/confluence/display/KAFKA/KIP-360%3A+Improve+reliability+of+idempotent%2Ftransactional+producer>)
//! has the Java producer bump its epoch. This client asks for a fresh producer id instead of a
//! bumped epoch: InitProducerId v3+ with the old id and epoch is not served by every broker
//! (tansu 0.6 answers it with an error), a fresh id is.

use std::{ops::ControlFlow, sync::Arc};

use tracing::info;

use crate::{
    backoff::{Backoff, BackoffConfig, ErrorOrThrottle},
    client::error::{Error, RequestContext, Result},
    connection::{BrokerCache, BrokerConnector},
    messenger::RequestError,
    protocol::{
        error::Error as ProtocolError,
        messages::InitProducerIdRequest,
        primitives::{Int32, NullableString},
    },
};

/// A producer id and its epoch, as InitProducerId handed them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub(crate) id: i64,
    pub(crate) epoch: i16,
}

/// The client's producer id, shared by its partition clients.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    brokers: Arc<BrokerConnector>,
    backoff_config: Arc<BackoffConfig>,
    current: tokio::sync::Mutex<ProducerIdentity>,
}

impl ProducerIds {
    /// Asks a broker for a producer id.
    pub(crate) async fn init(
        brokers: Arc<BrokerConnector>,
        backoff_config: Arc<BackoffConfig>,
    ) -> Result<Self> {
        let first = init_producer_id(&brokers, &backoff_config).await?;
        info!(
            producer_id = first.id,
            epoch = first.epoch,
            "idempotent producer"
        );
        Ok(Self {
            brokers,
            backoff_config,
            current: tokio::sync::Mutex::new(first),
        })
    }

    /// The producer id a partition without one starts with.
    pub(crate) async fn current(&self) -> ProducerIdentity {
        *self.current.lock().await
    }

    /// A producer id to use instead of `failed`: the one another partition obtained since, or a
    /// new one. Sequences are per producer id and partition, so a partition can start at 0
    /// under an id other partitions already write with.
    pub(crate) async fn replace(&self, failed: ProducerIdentity) -> Result<ProducerIdentity> {
        let mut current = self.current.lock().await;
        if *current == failed {
            *current = init_producer_id(&self.brokers, &self.backoff_config).await?;
            info!(
                producer_id = current.id,
                epoch = current.epoch,
                replaced = failed.id,
                "new producer id"
            );
        }
        Ok(*current)
    }
}

/// InitProducerId without a transactional id, sent to any broker (any broker answers it for an
/// idempotent producer without transactions), retried while the broker is not ready for it.
async fn init_producer_id(
    brokers: &BrokerConnector,
    backoff_config: &BackoffConfig,
) -> Result<ProducerIdentity> {
    let request = &InitProducerIdRequest {
        transactional_id: NullableString(None),
        // The Java producer's value without transactions (`NO_TRANSACTION_TIMEOUT_MS`).
        transaction_timeout_ms: Int32(i32::MAX),
    };
    let mut backoff = Backoff::new(backoff_config);
    backoff
        .retry_with_backoff("init_producer_id", || async move {
            let (broker, r#gen) = match BrokerCache::get(&brokers).await {
                Ok(connection) => connection,
                Err(e) => return ControlFlow::Continue(ErrorOrThrottle::Error(Error::from(e))),
            };
            let response = match broker.request(request).await {
                Ok(response) => response,
                Err(e @ RequestError::NoVersionMatch { .. }) => {
                    return ControlFlow::Break(Err(e.into()));
                }
                Err(e) => {
                    BrokerCache::invalidate(&brokers, "init_producer_id: connection broken", r#gen)
                        .await;
                    return ControlFlow::Continue(ErrorOrThrottle::Error(e.into()));
                }
            };
            let server_error = |protocol_error| Error::ServerError {
                protocol_error,
                error_message: None,
                request: RequestContext::ProducerId,
                response: None,
                is_virtual: false,
            };
            match response.error {
                None => ControlFlow::Break(Ok(ProducerIdentity {
                    id: response.producer_id.0,
                    epoch: response.producer_epoch.0,
                })),
                Some(
                    e @ (ProtocolError::CoordinatorLoadInProgress
                    | ProtocolError::CoordinatorNotAvailable
                    | ProtocolError::NotCoordinator),
                ) => ControlFlow::Continue(ErrorOrThrottle::Error(server_error(e))),
                Some(e) => ControlFlow::Break(Err(server_error(e))),
            }
        })
        .await
        .map_err(Error::RetryFailed)?
}

/// What a produce request's end means for its partition's sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Appended, now or by an earlier send of the same batch (DUPLICATE_SEQUENCE_NUMBER).
    Written,
    /// The broker answered the only send of the batch with an error other than a sequence
    /// error: not appended, so the next batch takes its sequence.
    Refused,
    /// The broker does not accept the producer's sequence any more: not appended, and no
    /// later batch would be until the partition starts again under a new producer id.
    SequenceLost,
    /// No answer to the last send, or an error after a send whose answer was lost: the batch
    /// may be in the log or not, so the next sequence the broker expects is unknown.
    Unknown,
}

impl Outcome {
    /// The outcome of a produce that failed with `error` after `sends` sends.
    pub(crate) fn of_error(error: &Error, sends: usize) -> Self {
        match error {
            Error::ServerError {
                protocol_error:
                    ProtocolError::OutOfOrderSequenceNumber
                    | ProtocolError::UnknownProducerId
                    | ProtocolError::InvalidProducerEpoch
                    | ProtocolError::ProducerFenced,
                is_virtual: false,
                ..
            } => Self::SequenceLost,
            Error::ServerError {
                is_virtual: false, ..
            } if sends == 1 => Self::Refused,
            _ => Self::Unknown,
        }
    }
}

/// One partition's sequence numbers under the producer id it writes with.
#[derive(Debug, Default)]
pub(crate) struct PartitionSequence {
    producer: Option<ProducerIdentity>,
    next: i32,
    /// A batch was sent and its outcome is not known (or its sequence was lost): the partition
    /// starts again under a new producer id before its next batch. Set when a batch is sent,
    /// so a produce cancelled while waiting for its answer leaves it set.
    restart: bool,
}

impl PartitionSequence {
    /// The producer id the next batch carries, or `None` when the partition must start (again)
    /// under a producer id from [`ProducerIds`].
    pub(crate) fn producer(&self) -> Option<ProducerIdentity> {
        self.producer.filter(|_| !self.restart)
    }

    /// The producer id to replace when starting again; `None` before the first batch.
    pub(crate) fn failed_producer(&self) -> Option<ProducerIdentity> {
        self.producer.filter(|_| self.restart)
    }

    /// Starts the partition under `producer`, at sequence 0.
    pub(crate) fn start(&mut self, producer: ProducerIdentity) {
        self.producer = Some(producer);
        self.next = 0;
        self.restart = false;
    }

    /// The base sequence of the batch about to be sent; in doubt until [`Self::settle`].
    pub(crate) fn send(&mut self) -> i32 {
        self.restart = true;
        self.next
    }

    /// Records how the batch of `records` records sent last ended.
    pub(crate) fn settle(&mut self, records: i32, outcome: Outcome) {
        match outcome {
            Outcome::Written => {
                self.next = next_sequence(self.next, records);
                self.restart = false;
            }
            Outcome::Refused => self.restart = false,
            Outcome::SequenceLost | Outcome::Unknown => self.restart = true,
        }
    }
}

/// The sequence after a batch of `records` records starting at `base`: sequences wrap to 0
/// after `i32::MAX`, as Kafka's `DefaultRecordBatch.incrementSequence` counts them.
pub(crate) fn next_sequence(base: i32, records: i32) -> i32 {
    if base > i32::MAX - records {
        records - (i32::MAX - base) - 1
    } else {
        base + records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ProducerIdentity = ProducerIdentity { id: 7, epoch: 0 };
    const B: ProducerIdentity = ProducerIdentity { id: 8, epoch: 0 };

    fn server_error(protocol_error: ProtocolError) -> Error {
        Error::ServerError {
            protocol_error,
            error_message: None,
            request: RequestContext::Partition("t".to_owned(), 0),
            response: None,
            is_virtual: false,
        }
    }

    #[test]
    fn sequences_start_at_zero_and_advance_by_the_record_count() {
        let mut s = PartitionSequence::default();
        assert_eq!(s.producer(), None);
        assert_eq!(
            s.failed_producer(),
            None,
            "the first start replaces nothing"
        );
        s.start(A);
        assert_eq!(s.producer(), Some(A));
        assert_eq!(s.send(), 0);
        s.settle(3, Outcome::Written);
        assert_eq!(s.send(), 3);
        s.settle(10, Outcome::Written);
        assert_eq!(s.send(), 13);
        assert_eq!(s.producer(), None, "in doubt while the batch is out");
        s.settle(1, Outcome::Written);
        assert_eq!(s.producer(), Some(A));
        assert_eq!(s.send(), 14);
    }

    #[test]
    fn a_refused_batch_leaves_its_sequence_to_the_next() {
        let mut s = PartitionSequence::default();
        s.start(A);
        assert_eq!(s.send(), 0);
        s.settle(5, Outcome::Refused);
        assert_eq!(s.producer(), Some(A));
        assert_eq!(s.failed_producer(), None);
        assert_eq!(s.send(), 0);
    }

    #[test]
    fn a_lost_or_unknown_outcome_starts_again_under_a_new_producer_id() {
        for outcome in [Outcome::SequenceLost, Outcome::Unknown] {
            let mut s = PartitionSequence::default();
            s.start(A);
            s.send();
            s.settle(2, Outcome::Written);
            s.send();
            s.settle(2, outcome);
            assert_eq!(s.producer(), None, "{outcome:?}");
            assert_eq!(s.failed_producer(), Some(A), "{outcome:?}");
            s.start(B);
            assert_eq!(s.producer(), Some(B));
            assert_eq!(s.send(), 0, "{outcome:?}");
        }
    }

    #[test]
    fn a_batch_whose_produce_was_cancelled_leaves_the_partition_in_doubt() {
        let mut s = PartitionSequence::default();
        s.start(A);
        s.send();
        // no settle: the produce was dropped while its answer was awaited
        assert_eq!(s.producer(), None);
        assert_eq!(s.failed_producer(), Some(A));
    }

    #[test]
    fn sequences_wrap_to_zero_after_i32_max() {
        assert_eq!(next_sequence(0, 1), 1);
        assert_eq!(next_sequence(5, 10), 15);
        assert_eq!(next_sequence(i32::MAX - 10, 10), i32::MAX);
        assert_eq!(next_sequence(i32::MAX - 10, 11), 0);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 5), 3);
    }

    #[test]
    fn errors_are_sorted_by_what_they_mean_for_the_sequence() {
        for e in [
            ProtocolError::OutOfOrderSequenceNumber,
            ProtocolError::UnknownProducerId,
            ProtocolError::InvalidProducerEpoch,
            ProtocolError::ProducerFenced,
        ] {
            assert_eq!(
                Outcome::of_error(&server_error(e), 1),
                Outcome::SequenceLost
            );
            assert_eq!(
                Outcome::of_error(&server_error(e), 3),
                Outcome::SequenceLost
            );
        }
        let too_large = server_error(ProtocolError::MessageTooLarge);
        assert_eq!(Outcome::of_error(&too_large, 1), Outcome::Refused);
        assert_eq!(
            Outcome::of_error(&too_large, 2),
            Outcome::Unknown,
            "an earlier send may have been appended"
        );
        let throttled = Error::ServerError {
            protocol_error: ProtocolError::ThrottlingQuotaExceeded,
            error_message: None,
            request: RequestContext::Partition("t".to_owned(), 0),
            response: None,
            is_virtual: true,
        };
        assert_eq!(Outcome::of_error(&throttled, 1), Outcome::Unknown);
        assert_eq!(Outcome::of_error(&Error::Timeout, 1), Outcome::Unknown);
        let broken = Error::Request(RequestError::IO(std::io::Error::other("cut")));
        assert_eq!(Outcome::of_error(&broken, 1), Outcome::Unknown);
    }
}
