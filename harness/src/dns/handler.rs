//! The request handler in front of hickory's [`Catalog`]: it asks the zones for an answer, sends
//! it, and records the query in the [`EventLog`].
//!
//! Every query, from the UDP loops or from hickory's server (TCP), passes through
//! [`QueryHandler::handle`] in three steps: *resolve* (the catalog's answer is captured, not
//! sent, and kept in the [`AnswerCache`] for the next query like it), *deliver* (send it to the
//! client), *record* (one [`EventKind::DnsQuery`]). Per-query faults belong in the deliver step,
//! [`deliver`]: it sees the client, the transport, the question and the catalog's full answer,
//! and decides what (if anything) goes back on the wire and what the event says. Which fault
//! applies is decided before, by the [`FaultSet`]; a timeout skips the deliver step, and a delay
//! runs it (and the record step) later in a task of its own, so the event of a delayed query is
//! recorded when its answer is sent.

use std::iter;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::Record as HickoryRecord;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponse, MessageResponseBuilder};
use tracing::{debug, warn};

use super::cache::{Answer, AnswerCache};
use super::faults::{AppliedFault, DnsFaultAction, FaultSet};
use super::respond::{Encoding, Respond};
use super::summary::{rcode_name, Asked, Summary};
use crate::events::{EventKind, EventLog};

/// Answers queries from a [`Catalog`], applies [`FaultSet`] faults, and records each query as an
/// [`EventKind::DnsQuery`].
pub struct QueryHandler {
    catalog: Catalog,
    answers: AnswerCache,
    faults: FaultSet,
    log: EventLog,
    /// Held while an answer is sent and its query recorded, so that the log has queries in
    /// causal order: a client's next query (which may be answered on another worker) cannot be
    /// recorded before the query whose answer led to it.
    send_order: Arc<tokio::sync::Mutex<()>>,
}

impl QueryHandler {
    /// A handler answering from `catalog`, with `faults`, recording into `log`.
    pub fn new(catalog: Catalog, faults: FaultSet, log: EventLog) -> Self {
        Self {
            catalog,
            answers: AnswerCache::default(),
            faults,
            log,
            send_order: Arc::default(),
        }
    }

    /// The catalog's answer to `request`: kept from a query like it, or looked up (and kept).
    async fn resolve<T: Time>(&self, request: &Request) -> Option<Arc<Answer>> {
        if let Some(answer) = self.answers.get(request) {
            return Some(answer);
        }
        let capture = Capture::default();
        self.catalog
            .handle_request::<_, T>(request, capture.clone())
            .await;
        let answer = match Answer::new(request, capture.take()?) {
            Ok(answer) => Arc::new(answer),
            Err(error) => {
                warn!(%error, "cannot re-read the catalog's response");
                return None;
            }
        };
        self.answers.insert(request, answer.clone());
        Some(answer)
    }

    /// The fault to apply to `request`, if any.
    fn select_fault(&self, request: &Request) -> Option<AppliedFault> {
        let info = request.request_info().ok()?;
        self.faults.select(
            info.query.name(),
            info.query.query_type(),
            request.protocol(),
        )
    }

    /// Answers `request` through `response_handle` and records it.
    pub async fn handle<R: Respond, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let received = Instant::now();
        let fault = self.select_fault(request);
        if let Some(AppliedFault {
            action: DnsFaultAction::Timeout,
            ..
        }) = fault
        {
            let summary = Summary::new("no answer").note("fault timeout");
            Question::of(request, None, received).record(&self.log, summary);
            return unsent(request, ResponseCode::ServFail);
        }
        let answer = self.resolve::<T>(request).await;
        let question = Question::of(request, answer.as_deref(), received);
        let Some(AppliedFault {
            action: DnsFaultAction::Delay(delay),
            ..
        }) = fault
        else {
            let _in_order = self.send_order.lock().await;
            let (info, summary) = deliver(request, answer.as_deref(), fault, response_handle).await;
            question.record(&self.log, summary);
            return info;
        };
        // Sent from a task of its own, so that neither this UDP worker nor the queries behind
        // this one on a TCP connection wait for it.
        let info = match &answer {
            Some(answer) => ResponseInfo::from(Header {
                metadata: answer.metadata_for(request),
                counts: HeaderCounts::default(),
            }),
            None => unsent(request, ResponseCode::ServFail),
        };
        let owned = match Request::from_bytes(
            request.as_slice().to_vec(),
            request.src(),
            request.protocol(),
        ) {
            Ok(owned) => owned,
            Err(error) => {
                warn!(%error, "cannot re-read a request to delay its answer");
                let summary = Summary::new("no answer").note(format!("cannot delay: {error}"));
                question.record(&self.log, summary);
                return info;
            }
        };
        let log = self.log.clone();
        let send_order = self.send_order.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _in_order = send_order.lock().await;
            let (_, summary) = deliver(&owned, answer.as_deref(), fault, response_handle).await;
            question.record(&log, summary);
        });
        info
    }
}

/// hickory's server hands TCP queries to the handler here.
#[async_trait::async_trait]
impl RequestHandler for QueryHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.handle::<_, T>(request, Encoding(response_handle))
            .await
    }
}

/// Who asked what, over which transport, and when the query arrived.
struct Question {
    client: IpAddr,
    transport: String,
    asked: Asked,
    received: Instant,
}

impl Question {
    /// The question of `request`, received at `received`; its text is taken from `answer` if
    /// there is one.
    fn of(request: &Request, answer: Option<&Answer>, received: Instant) -> Self {
        let transport = match request.protocol() {
            Protocol::Udp => "udp".to_string(),
            Protocol::Tcp => "tcp".to_string(),
            #[allow(unreachable_patterns)]
            other => other.to_string().to_lowercase(),
        };
        Self {
            client: request.src().ip().to_canonical(),
            transport,
            asked: answer.map_or_else(|| Asked::of(request), |answer| answer.asked.clone()),
            received,
        }
    }

    /// Records the query and what was done about it.
    fn record(self, log: &EventLog, answer: Summary) {
        let answer = answer.into_text();
        let Asked { name, record_type } = self.asked;
        debug!(client = %self.client, %name, %record_type, %answer, "dns query");
        log.record(EventKind::DnsQuery {
            client: self.client,
            transport: self.transport,
            name,
            record_type,
            answer,
            latency: self.received.elapsed(),
        });
    }
}

/// What the handler reports for a query it does not answer (or not yet).
fn unsent(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Sends `answer` (the catalog's response, or SERVFAIL if there is none), or what `fault` makes
/// of it, to the client and describes what was sent, e.g. `NOERROR 192.0.2.10` or
/// `SERVFAIL (fault servfail)`.
///
/// This is the one place where per-query faults change what goes on the wire. Two actions are
/// handled by the caller: a timeout sends nothing, and a delay calls this later from a task of
/// its own.
async fn deliver<R: Respond>(
    request: &Request,
    answer: Option<&Answer>,
    fault: Option<AppliedFault>,
    mut response_handle: R,
) -> (ResponseInfo, Summary) {
    let Some(answer) = answer else {
        let response = MessageResponseBuilder::new(&request.queries, None)
            .error_msg(&request.metadata, ResponseCode::ServFail);
        let sent = response_handle.send_response(response).await;
        let summary = Summary::new("SERVFAIL").note("internal error");
        return finish(request, sent, summary);
    };
    let Some(fault) = fault else {
        let sent = response_handle.send_answer(request, answer).await;
        return finish(request, sent, answer.summary.clone());
    };
    let mut metadata = answer.metadata_for(request);
    let builder = MessageResponseBuilder::new(&request.queries, answer.message.edns.as_ref());

    let note = format!("fault {}", fault.action);
    let (summary, sent) = match fault.action {
        DnsFaultAction::ServFail | DnsFaultAction::Refused => {
            metadata.response_code = match fault.action {
                DnsFaultAction::ServFail => ResponseCode::ServFail,
                _ => ResponseCode::Refused,
            };
            metadata.authoritative = false;
            let summary = Summary::new(rcode_name(metadata.response_code)).note(note);
            let response = builder.build_no_records(metadata);
            (summary, response_handle.send_response(response).await)
        }
        DnsFaultAction::NxDomain | DnsFaultAction::NoData => {
            let summary = if fault.action == DnsFaultAction::NxDomain {
                metadata.response_code = ResponseCode::NXDomain;
                Summary::new("NXDOMAIN").note(note)
            } else {
                metadata.response_code = ResponseCode::NoError;
                Summary::new("NOERROR").note("no records").note(note)
            };
            metadata.authoritative = true;
            let response = builder.build(
                metadata,
                iter::empty(),
                iter::once(&fault.soa),
                iter::empty(),
                iter::empty(),
            );
            (summary, response_handle.send_response(response).await)
        }
        DnsFaultAction::Truncate => {
            // Only selected for UDP; `finish` notes the TC bit.
            metadata.truncation = true;
            let summary = Summary::new(rcode_name(metadata.response_code)).note(note);
            let response = builder.build_no_records(metadata);
            (summary, response_handle.send_response(response).await)
        }
        DnsFaultAction::Delay(_) | DnsFaultAction::Timeout => {
            let summary = answer.summary.clone().note(note);
            (summary, response_handle.send_answer(request, answer).await)
        }
    };
    finish(request, sent, summary)
}

/// Turns the result of sending into the handler's result, noting truncation and send errors.
fn finish(
    request: &Request,
    sent: Result<ResponseInfo, NetError>,
    summary: Summary,
) -> (ResponseInfo, Summary) {
    match sent {
        Ok(info) if info.truncation => (info, summary.note_first("truncated")),
        Ok(info) => (info, summary),
        Err(error) => {
            warn!(%error, "cannot send DNS response");
            let info = unsent(request, ResponseCode::ServFail);
            (info, summary.note(format!("not sent: {error}")))
        }
    }
}

/// A response handler that keeps the encoded response instead of sending it.
#[derive(Clone, Default)]
struct Capture {
    slot: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    fn take(&self) -> Option<Vec<u8>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a HickoryRecord> + Send + 'a,
            impl Iterator<Item = &'a HickoryRecord> + Send + 'a,
            impl Iterator<Item = &'a HickoryRecord> + Send + 'a,
            impl Iterator<Item = &'a HickoryRecord> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // No size limit here: the real response handle truncates for UDP when it sends.
        let mut bytes = Vec::with_capacity(512);
        let info = response.destructive_emit(&mut BinEncoder::new(&mut bytes))?;
        *self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(bytes);
        Ok(info)
    }
}
