//! InitProducerId (API key 22): a producer id and epoch for the idempotent producer.
//!
//! Versions 0 to 4, as Apache Kafka's `InitProducerIdRequest.json` defines them: flexible from
//! 2, with the producer id and epoch to resume (KIP-360's epoch bump) from 3. This client never
//! resumes: it sends -1/-1 there, asking for a fresh id. tansu 0.6 serves only that request
//! (its sqlite storage panics on a request without the pair, i.e. below version 3), so the
//! highest version both sides know is the one to send.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_InitProducerId>
//! - <https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging>
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error,
    primitives::{CompactNullableStringRef, Int16, Int32, Int64, NullableString, TaggedFields},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// The transactional id, or null for an idempotent producer without transactions.
    pub transactional_id: NullableString,

    /// How long an idle transaction may stay open; only relevant with a transactional id.
    pub transaction_timeout_ms: Int32,
}

impl<W> WriteVersionedType<W> for InitProducerIdRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 4);

        if v >= 2 {
            CompactNullableStringRef(self.transactional_id.0.as_deref()).write(writer)?;
        } else {
            self.transactional_id.write(writer)?;
        }
        self.transaction_timeout_ms.write(writer)?;
        if v >= 3 {
            // A fresh producer id: no id and epoch to resume.
            Int64(-1).write(writer)?;
            Int16(-1).write(writer)?;
        }
        if v >= 2 {
            TaggedFields::default().write(writer)?;
        }
        Ok(())
    }
}

impl RequestBody for InitProducerIdRequest {
    type ResponseBody = InitProducerIdResponse;

    const API_KEY: ApiKey = ApiKey::InitProducerId;

    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(4)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(2));
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    /// How long the broker throttles this client after this answer.
    pub throttle_time_ms: Int32,

    /// The error, if any.
    pub error: Option<Error>,

    /// The producer id.
    pub producer_id: Int64,

    /// The epoch of the producer id.
    pub producer_epoch: Int16,
}

impl<R> ReadVersionedType<R> for InitProducerIdResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 4);

        let response = Self {
            throttle_time_ms: Int32::read(reader)?,
            error: Error::new(Int16::read(reader)?.0),
            producer_id: Int64::read(reader)?,
            producer_epoch: Int16::read(reader)?,
        };
        if v >= 2 {
            TaggedFields::read(reader)?;
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn a_request_without_transactional_id_is_a_null_string_and_the_timeout() {
        let request = InitProducerIdRequest {
            transactional_id: NullableString(None),
            transaction_timeout_ms: Int32(60_000),
        };
        let mut buf = Vec::new();
        request
            .write_versioned(&mut buf, ApiVersion(Int16(1)))
            .unwrap();
        assert_eq!(buf, [0xff, 0xff, 0x00, 0x00, 0xea, 0x60]);
        let mut buf = Vec::new();
        request
            .write_versioned(&mut buf, ApiVersion(Int16(4)))
            .unwrap();
        assert_eq!(
            buf,
            [
                0x00, // compact null string
                0x00, 0x00, 0xea, 0x60, // timeout
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer id -1
                0xff, 0xff, // epoch -1
                0x00, // no tagged fields
            ]
        );
        let mut buf = Vec::new();
        request
            .write_versioned(&mut buf, ApiVersion(Int16(2)))
            .unwrap();
        assert_eq!(buf, [0x00, 0x00, 0x00, 0xea, 0x60, 0x00]);
    }

    #[test]
    fn an_answer_reads_its_error_producer_id_and_epoch() {
        let bytes = [
            0, 0, 0, 7, // throttle_time_ms
            0, 0, // no error
            0, 0, 0, 0, 0, 0, 1, 2, // producer_id
            0, 3, // producer_epoch
        ];
        let answer = InitProducerIdResponse::read_versioned(
            &mut Cursor::new(bytes.to_vec()),
            ApiVersion(Int16(0)),
        )
        .unwrap();
        assert_eq!(
            answer,
            InitProducerIdResponse {
                throttle_time_ms: Int32(7),
                error: None,
                producer_id: Int64(258),
                producer_epoch: Int16(3),
            }
        );
        let refused = [
            0, 0, 0, 0, 0, 31, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        let answer = InitProducerIdResponse::read_versioned(
            &mut Cursor::new(refused.to_vec()),
            ApiVersion(Int16(1)),
        )
        .unwrap();
        assert_eq!(answer.error, Some(Error::ClusterAuthorizationFailed));
        assert_eq!(answer.producer_id, Int64(-1));
        let flexible = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0];
        let mut reader = Cursor::new(flexible.to_vec());
        let answer =
            InitProducerIdResponse::read_versioned(&mut reader, ApiVersion(Int16(4))).unwrap();
        assert_eq!(
            (answer.producer_id, answer.producer_epoch),
            (Int64(9), Int16(0))
        );
        assert_eq!(reader.position(), 17, "the tagged fields read too");
    }
}
