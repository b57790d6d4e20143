//! The request handler in front of hickory's [`Catalog`]: it asks the zones for an answer, sends
//! it, and records the query in the [`EventLog`].
//!
//! Every query passes through [`QueryHandler::handle_request`] in three steps: *resolve* (the
//! catalog's answer is captured, not sent), *deliver* (send it to the client), *record* (one
//! [`EventKind::DnsQuery`]). Per-query faults belong in the deliver step, [`deliver`]: it sees the
//! client, the transport, the question and the catalog's full answer, and decides what (if
//! anything) goes back on the wire and what the event says. Which fault applies is decided
//! before, by the [`FaultSet`]; a timeout skips the deliver step, and a delay runs it (and the
//! record step) later in a task of its own, so the event of a delayed query is recorded when
//! its answer is sent.

use std::fmt;
use std::iter;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_proto::rr::{Name, RData, Record as HickoryRecord, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponse, MessageResponseBuilder};
use tracing::{debug, warn};

use super::faults::{AppliedFault, DnsFaultAction, FaultSet};
use crate::events::{EventKind, EventLog};

/// Answers queries from a [`Catalog`], applies [`FaultSet`] faults, and records each query as an
/// [`EventKind::DnsQuery`].
pub struct QueryHandler {
    catalog: Catalog,
    faults: FaultSet,
    log: EventLog,
}

impl QueryHandler {
    /// A handler answering from `catalog`, with `faults`, recording into `log`.
    pub fn new(catalog: Catalog, faults: FaultSet, log: EventLog) -> Self {
        Self {
            catalog,
            faults,
            log,
        }
    }

    /// Runs the catalog on `request` and returns the response it would have sent.
    async fn resolve<T: Time>(&self, request: &Request) -> Option<Message> {
        let capture = Capture::default();
        self.catalog
            .handle_request::<_, T>(request, capture.clone())
            .await;
        let bytes = capture.take()?;
        match Message::from_vec(&bytes) {
            Ok(message) => Some(message),
            Err(error) => {
                warn!(%error, "cannot re-read the catalog's response");
                None
            }
        }
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
}

#[async_trait::async_trait]
impl RequestHandler for QueryHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let question = Question::of(request);
        let fault = self.select_fault(request);
        if let Some(AppliedFault {
            action: DnsFaultAction::Timeout,
            ..
        }) = fault
        {
            let summary = Summary::new("no answer").note("fault timeout");
            question.record(&self.log, summary);
            return unsent(request, ResponseCode::ServFail);
        }
        let answer = self.resolve::<T>(request).await;
        let Some(AppliedFault {
            action: DnsFaultAction::Delay(delay),
            ..
        }) = fault
        else {
            let (info, summary) = deliver(request, answer, fault, response_handle).await;
            question.record(&self.log, summary);
            return info;
        };
        // Sent from a task of its own, so that neither this UDP worker nor the queries behind
        // this one on a TCP connection wait for it.
        let info = match &answer {
            Some(answer) => ResponseInfo::from(Header {
                metadata: answer.metadata,
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
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (_, summary) = deliver(&owned, answer, fault, response_handle).await;
            question.record(&log, summary);
        });
        info
    }
}

/// Who asked what, over which transport.
struct Question {
    client: IpAddr,
    transport: String,
    name: String,
    record_type: String,
}

impl Question {
    fn of(request: &Request) -> Self {
        let transport = match request.protocol() {
            Protocol::Udp => "udp".to_string(),
            Protocol::Tcp => "tcp".to_string(),
            #[allow(unreachable_patterns)]
            other => other.to_string().to_lowercase(),
        };
        let (name, record_type) = match request.request_info() {
            Ok(info) => (
                display_name(&Name::from(info.query.name())),
                info.query.query_type().to_string(),
            ),
            // Not exactly one question: the catalog answers FORMERR.
            Err(_) => (String::new(), String::new()),
        };
        Self {
            client: request.src().ip().to_canonical(),
            transport,
            name,
            record_type,
        }
    }

    /// Records the query and what was done about it.
    fn record(self, log: &EventLog, answer: Summary) {
        let answer = answer.to_string();
        debug!(client = %self.client, name = %self.name, record_type = %self.record_type, %answer, "dns query");
        log.record(EventKind::DnsQuery {
            client: self.client,
            transport: self.transport,
            name: self.name,
            record_type: self.record_type,
            answer,
        });
    }
}

/// What was done about a query: `NOERROR 192.0.2.10` followed by notes in parentheses, such as
/// `NOERROR (no records, fault nodata)` or `NOERROR (truncated, fault truncate)`.
struct Summary {
    text: String,
    notes: Vec<String>,
}

impl Summary {
    fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            notes: Vec::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if !self.notes.is_empty() {
            write!(f, " ({})", self.notes.join(", "))?;
        }
        Ok(())
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
async fn deliver<R: ResponseHandler>(
    request: &Request,
    answer: Option<Message>,
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
    let builder = MessageResponseBuilder::new(&request.queries, answer.edns.as_ref());
    let Some(fault) = fault else {
        let summary = summarize(&answer, request_type(request));
        let response = builder.build(
            answer.metadata,
            answer.answers.iter(),
            answer.authorities.iter(),
            iter::empty(),
            answer.additionals.iter(),
        );
        let sent = response_handle.send_response(response).await;
        return finish(request, sent, summary);
    };

    let note = format!("fault {}", fault.action);
    let mut metadata = answer.metadata;
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
            let summary = summarize(&answer, request_type(request)).note(note);
            let response = builder.build(
                metadata,
                answer.answers.iter(),
                answer.authorities.iter(),
                iter::empty(),
                answer.additionals.iter(),
            );
            (summary, response_handle.send_response(response).await)
        }
    };
    finish(request, sent, summary)
}

/// Turns the result of sending into the handler's result, noting truncation and send errors.
fn finish(
    request: &Request,
    sent: Result<ResponseInfo, NetError>,
    mut summary: Summary,
) -> (ResponseInfo, Summary) {
    match sent {
        Ok(info) => {
            if info.truncation {
                summary.notes.insert(0, "truncated".to_string());
            }
            (info, summary)
        }
        Err(error) => {
            warn!(%error, "cannot send DNS response");
            let info = unsent(request, ResponseCode::ServFail);
            (info, summary.note(format!("not sent: {error}")))
        }
    }
}

fn request_type(request: &Request) -> Option<RecordType> {
    request
        .request_info()
        .ok()
        .map(|info| info.query.query_type())
}

/// `NOERROR 192.0.2.10, 2001:db8::10`, `NOERROR (no records)`, `NXDOMAIN`, `REFUSED`.
///
/// Answers of another type than asked for (a CNAME leading to the answer) are prefixed with
/// their type: `NOERROR CNAME mx1.example.test, 192.0.2.10`. More notes can be added.
fn summarize(message: &Message, asked: Option<RecordType>) -> Summary {
    let rcode = rcode_name(message.metadata.response_code);
    if message.answers.is_empty() {
        return match message.metadata.response_code {
            ResponseCode::NoError => Summary::new(rcode).note("no records"),
            _ => Summary::new(rcode),
        };
    }
    let answers: Vec<String> = message
        .answers
        .iter()
        .map(|record| {
            let data = display_rdata(&record.data);
            if Some(record.record_type()) == asked {
                data
            } else {
                format!("{} {data}", record.record_type())
            }
        })
        .collect();
    Summary::new(format!("{rcode} {}", answers.join(", ")))
}

/// The conventional upper-case mnemonic (`NOERROR`, `NXDOMAIN`, ...).
fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::NXDomain => "NXDOMAIN".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        ResponseCode::NotAuth => "NOTAUTH".to_string(),
        ResponseCode::NotZone => "NOTZONE".to_string(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// Record data as in a zone file, with names written without their trailing dot.
fn display_rdata(data: &RData) -> String {
    match data {
        RData::A(addr) => addr.to_string(),
        RData::AAAA(addr) => addr.to_string(),
        RData::MX(mx) => format!("{} {}", mx.preference, display_name(&mx.exchange)),
        RData::CNAME(target) => display_name(&target.0),
        RData::PTR(target) => display_name(&target.0),
        RData::NS(target) => display_name(&target.0),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|part| format!("{:?}", String::from_utf8_lossy(part)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// `mx1.example.test` (no trailing dot); the root stays `.`.
fn display_name(name: &Name) -> String {
    let text = name.to_ascii();
    match text.strip_suffix('.') {
        Some(bare) if !bare.is_empty() => bare.to_string(),
        _ => text,
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, MX, TXT};

    fn record(name: &str, data: RData) -> HickoryRecord {
        HickoryRecord::from_rdata(name.parse().unwrap(), 60, data)
    }

    #[test]
    fn summaries_list_answers_without_trailing_dots() {
        let mut message = Message::response(1, hickory_proto::op::OpCode::Query);
        assert_eq!(
            summarize(&message, Some(RecordType::A)).to_string(),
            "NOERROR (no records)"
        );
        message.add_answer(record(
            "www.example.test.",
            RData::CNAME(CNAME("mx1.example.test.".parse().unwrap())),
        ));
        message.add_answer(record(
            "mx1.example.test.",
            RData::A(A("192.0.2.10".parse().unwrap())),
        ));
        assert_eq!(
            summarize(&message, Some(RecordType::A)).to_string(),
            "NOERROR CNAME mx1.example.test, 192.0.2.10"
        );

        let mut message = Message::response(1, hickory_proto::op::OpCode::Query);
        message.add_answer(record(
            "example.test.",
            RData::MX(MX::new(10, "mx1.example.test.".parse().unwrap())),
        ));
        message.add_answer(record(
            "example.test.",
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ));
        assert_eq!(
            summarize(&message, Some(RecordType::MX)).to_string(),
            "NOERROR 10 mx1.example.test, TXT \"v=spf1 -all\""
        );

        message.answers.clear();
        message.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(
            summarize(&message, Some(RecordType::MX)).to_string(),
            "NXDOMAIN"
        );
    }
}
