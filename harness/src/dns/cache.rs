//! The catalog's answers, kept per question so that a repeated query is not looked up again.
//!
//! The zones never change while the server runs, and the catalog's answer to a query depends
//! on the query message only: not on the client, the transport (UDP truncation happens when
//! the answer is sent) or the time. So the answer to a message seen before, apart from its ID,
//! is the answer given then with the new ID. This matters because hickory's catalog spends
//! time quadratic in the number of labels of the name (a reverse IPv6 name has 34), and an MTA
//! asks the same few questions over and over.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use hickory_proto::op::{Message, Metadata, OpCode};
use hickory_server::server::Request;

use super::summary::Summary;

/// At most this many answers are kept; once full, further answers are not kept, so that
/// queries that are all different (random names, EDNS cookies) cannot grow it without bound.
const CAPACITY: usize = 4096;

/// The catalog's response to one query, and what a query event says about it.
#[derive(Debug)]
pub struct Answer {
    /// The response, with the ID of the query it was first made for.
    pub message: Message,
    /// The event text for it when no fault applies, e.g. `NOERROR 192.0.2.10`.
    pub summary: Summary,
}

impl Answer {
    /// The answer `message` to `request`.
    pub fn new(request: &Request, message: Message) -> Self {
        let asked = request
            .request_info()
            .ok()
            .map(|info| info.query.query_type());
        let summary = Summary::of_response(&message, asked);
        Self { message, summary }
    }

    /// The response header for `request`, which may be a later query than the one the answer
    /// was made for: the same but for the ID.
    pub fn metadata_for(&self, request: &Request) -> Metadata {
        let mut metadata = self.message.metadata;
        metadata.id = request.metadata.id;
        metadata
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
        Arc::new(Answer::new(request, message))
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
