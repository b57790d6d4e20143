//! The catalog's answers, kept per question so that a repeated query is not looked up again.
//!
//! The zones never change while the server runs, and the catalog's answer to a query depends
//! on the query message only: not on the client, the transport (UDP truncation happens when
//! the answer is sent) or the time. So the answer to a message seen before, apart from its ID,
//! is the answer given then with the new ID. This matters because hickory's catalog spends
//! time quadratic in the number of labels of the name (a reverse IPv6 name has 34), and an MTA
//! asks the same few questions over and over.

use std::collections::HashMap;
use std::iter;
use std::sync::{Arc, PoisonError, RwLock};

use hickory_proto::op::{Header, HeaderCounts, Message, Metadata, OpCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use hickory_server::server::{Request, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use super::summary::{Asked, Summary};

/// At most this many answers are kept; once full, further answers are not kept, so that
/// queries that are all different (random names, EDNS cookies) cannot grow it without bound.
const CAPACITY: usize = 4096;

/// The catalog's response to one query, and what a query event says about the query and it.
#[derive(Debug)]
pub struct Answer {
    /// The response as the catalog encoded it (without a size limit), with the ID of the query
    /// it was first made for.
    wire: Vec<u8>,
    /// Its section counts.
    counts: HeaderCounts,
    /// The same response, decoded.
    pub message: Message,
    /// The question, as the event writes it.
    pub asked: Asked,
    /// The event text for it when no fault applies, e.g. `NOERROR 192.0.2.10`.
    pub summary: Summary,
}

impl Answer {
    /// The catalog's response `wire` to `request`.
    ///
    /// # Errors
    ///
    /// If `wire` is not a DNS message.
    pub fn new(request: &Request, wire: Vec<u8>) -> Result<Self, DecodeError> {
        let counts = Header::read(&mut BinDecoder::new(&wire))?.counts;
        let message = Message::from_vec(&wire)?;
        let asked = request
            .request_info()
            .ok()
            .map(|info| info.query.query_type());
        let summary = Summary::of_response(&message, asked);
        Ok(Self {
            wire,
            counts,
            message,
            asked: Asked::of(request),
            summary,
        })
    }

    /// The response header for `request`, which may be a later query than the one the answer
    /// was made for: the same but for the ID.
    pub fn metadata_for(&self, request: &Request) -> Metadata {
        let mut metadata = self.message.metadata;
        metadata.id = request.metadata.id;
        metadata
    }

    /// The response to `request` in hickory's form, to be encoded (and truncated) on sending.
    pub fn response<'a>(
        &'a self,
        request: &'a Request,
    ) -> MessageResponse<
        'a,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    > {
        MessageResponseBuilder::new(&request.queries, self.message.edns.as_ref()).build(
            self.metadata_for(request),
            self.message.answers.iter(),
            self.message.authorities.iter(),
            iter::empty(),
            self.message.additionals.iter(),
        )
    }

    /// The encoded response to `request` if it fits in `limit` bytes: the kept encoding with
    /// `request`'s ID, and what was sent.
    pub fn encoded_for(&self, request: &Request, limit: usize) -> Option<(Vec<u8>, ResponseInfo)> {
        if self.wire.len() > limit {
            return None;
        }
        let mut wire = self.wire.clone();
        wire[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
        let info = ResponseInfo::from(Header {
            metadata: self.metadata_for(request),
            counts: self.counts,
        });
        Some((wire, info))
    }

    /// The largest response the client takes over UDP: its EDNS payload size, or 512 bytes
    /// without EDNS (RFC 1035 section 4.2.1), as hickory encodes it.
    pub fn udp_limit(&self) -> usize {
        self.message
            .edns
            .as_ref()
            .map_or(512, |edns| usize::from(edns.max_payload()))
    }
}

/// Answers by query message (every byte after the ID), for standard queries only.
#[derive(Debug, Default)]
pub struct AnswerCache {
    answers: RwLock<HashMap<Box<[u8]>, Arc<Answer>>>,
}

impl AnswerCache {
    /// The answer kept for a query like `request`, if any.
    pub fn get(&self, request: &Request) -> Option<Arc<Answer>> {
        let key = key(request)?;
        let answers = self.answers.read().unwrap_or_else(PoisonError::into_inner);
        answers.get(key).cloned()
    }

    /// Keeps `answer` for queries like `request`, unless the cache is full.
    pub fn insert(&self, request: &Request, answer: Arc<Answer>) {
        let Some(key) = key(request) else {
            return;
        };
        let mut answers = self.answers.write().unwrap_or_else(PoisonError::into_inner);
        if answers.len() < CAPACITY {
            answers.insert(key.into(), answer);
        }
    }
}

/// The bytes that determine the answer: all but the ID (the first two bytes), for standard
/// queries; `None` for other operations, which are not cached.
fn key(request: &Request) -> Option<&[u8]> {
    if request.metadata.op_code != OpCode::Query {
        return None;
    }
    request.as_slice().get(2..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    use hickory_server::net::xfer::Protocol;

    fn request(id: u16, name: &str, op_code: OpCode) -> Request {
        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.op_code = op_code;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let src = "192.0.2.1:5353".parse().unwrap();
        Request::from_bytes(message.to_vec().unwrap(), src, Protocol::Udp).unwrap()
    }

    fn answer(request: &Request) -> Arc<Answer> {
        let message = Message::response(request.metadata.id, OpCode::Query);
        Arc::new(Answer::new(request, message.to_vec().unwrap()).unwrap())
    }

    #[test]
    fn queries_differing_only_in_their_id_share_an_answer() {
        let cache = AnswerCache::default();
        let first = request(1, "mx1.example.test.", OpCode::Query);
        assert!(cache.get(&first).is_none());
        cache.insert(&first, answer(&first));
        let again = request(2, "mx1.example.test.", OpCode::Query);
        assert_eq!(cache.get(&again).unwrap().message.metadata.id, 1);
        // The name's case is part of the question (the response echoes it).
        assert!(cache
            .get(&request(3, "MX1.example.test.", OpCode::Query))
            .is_none());
    }

    #[test]
    fn a_kept_encoding_is_sent_with_the_new_id_if_it_fits() {
        let first = request(1, "example.test.", OpCode::Query);
        let answer = answer(&first);
        let again = request(2, "example.test.", OpCode::Query);
        let (wire, info) = answer.encoded_for(&again, 512).unwrap();
        assert_eq!(info.id, 2);
        assert_eq!(Message::from_vec(&wire).unwrap().metadata.id, 2);
        assert_eq!(wire[2..], answer.wire[2..]);
        assert!(answer.encoded_for(&again, wire.len() - 1).is_none());
        assert_eq!(answer.udp_limit(), 512);
    }

    #[test]
    fn only_standard_queries_are_kept() {
        let cache = AnswerCache::default();
        let update = request(1, "example.test.", OpCode::Update);
        cache.insert(&update, answer(&update));
        assert!(cache.get(&update).is_none());
    }

    #[test]
    fn a_full_cache_keeps_what_it_has() {
        let cache = AnswerCache::default();
        for index in 0..CAPACITY + 1 {
            let request = request(1, &format!("h{index}.example.test."), OpCode::Query);
            cache.insert(&request, answer(&request));
        }
        let first = request(2, "h0.example.test.", OpCode::Query);
        assert!(cache.get(&first).is_some());
        let last = request(2, &format!("h{CAPACITY}.example.test."), OpCode::Query);
        assert!(cache.get(&last).is_none());
    }
}
