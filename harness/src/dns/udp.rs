//! DNS over UDP: receive loops that answer each datagram in turn and send it straight back.
//!
//! hickory's server spawns a task per datagram and passes each response through a channel to
//! the socket's task; here each loop answers its datagrams itself, one after the other (the
//! zones are in memory; a delayed answer is sent from a task of its own), and sends a kept
//! [`Answer`] as the catalog first encoded it, with the new ID. Like hickory's server, a loop
//! drops datagrams shorter than a header, responses, and datagrams from an address that cannot
//! be answered, and answers a malformed query with FORMERR without recording it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Header, HeaderCounts, Message, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::cache::Answer;
use super::handler::QueryHandler;
use super::respond::Respond;

/// Largest datagram read; longer ones are cut (and then fail to parse), as in hickory.
const RECEIVE_BUFFER: usize = 4096;

/// Answers the queries arriving on `socket` until `stop` turns true.
pub async fn serve(
    socket: Arc<UdpSocket>,
    handler: Arc<QueryHandler>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; RECEIVE_BUFFER];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) if is_unrecoverable(&error) => {
                warn!(%error, "DNS UDP socket failed; no longer serving it");
                break;
            }
            Err(error) => {
                warn!(%error, "error receiving on a DNS UDP socket");
                continue;
            }
        };
        if !answerable(src) {
            debug!(%src, "cannot answer a DNS query from this address");
            continue;
        }
        let responder = UdpResponder {
            socket: socket.clone(),
            dst: src,
        };
        let datagram = &buffer[..len];
        let request = match Request::from_bytes(datagram.to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(error) => {
                debug!(%error, %src, "malformed DNS query");
                responder.form_error(datagram).await;
                continue;
            }
        };
        if request.metadata.message_type == MessageType::Response {
            continue;
        }
        handler.handle::<_, TokioTime>(&request, responder).await;
    }
}

/// Errors after which the socket is of no more use, as hickory judges them.
fn is_unrecoverable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted
    )
}

/// Whether a response can be sent to `src` (as hickory checks): not port 0, not an
/// unspecified or broadcast address.
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
            IpAddr::V6(ip) => !ip.is_unspecified(),
        }
}

/// Sends the response to one UDP query, encoded as hickory's server does: at most the EDNS
/// payload size (512 bytes without EDNS), truncated (TC set) beyond it.
#[derive(Clone)]
pub struct UdpResponder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

impl UdpResponder {
    /// Answers a datagram that has a header but is no valid query with FORMERR, as hickory's
    /// server does; drops one shorter than a header.
    async fn form_error(mut self, datagram: &[u8]) {
        let Ok(header) = Header::read(&mut BinDecoder::new(datagram)) else {
            return;
        };
        let no_queries = match Queries::read(&mut BinDecoder::new(&[]), 0) {
            Ok(queries) => queries,
            Err(error) => {
                error!(%error, "cannot make an empty question section");
                return;
            }
        };
        let response = MessageResponseBuilder::new(&no_queries, None)
            .error_msg(&header.metadata, ResponseCode::FormErr);
        if let Err(error) = self.send_response(response).await {
            warn!(%error, dst = %self.dst, "cannot send FORMERR");
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let id = response.metadata().id;
        let op_code = response.metadata().op_code;
        let limit = response.edns().map_or(512, |edns| edns.max_payload());
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(encoding) => {
                error!(error = %encoding, "cannot encode a DNS response; sending SERVFAIL");
                let message = Message::error_msg(id, op_code, ResponseCode::ServFail);
                bytes = message.to_vec()?;
                ResponseInfo::from(Header {
                    metadata: message.metadata,
                    counts: HeaderCounts::default(),
                })
            }
        };
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}

#[async_trait::async_trait]
impl Respond for UdpResponder {
    async fn send_answer(
        &mut self,
        request: &Request,
        answer: &Answer,
    ) -> Result<ResponseInfo, NetError> {
        match answer.encoded_for(request, answer.udp_limit()) {
            Some((bytes, info)) => {
                self.socket.send_to(&bytes, self.dst).await?;
                Ok(info)
            }
            // Too long: encoded again, truncated.
            None => self.send_response(answer.response(request)).await,
        }
    }
}
