//! Starting and stopping the DNS server on sockets the caller has bound.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record as HickoryRecord;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use hickory_server::Server;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

use super::error::DnsError;
use super::faults::{DnsFault, FaultSet};
use super::handler::QueryHandler;
use super::records::Zone;
use super::zones::build_catalog;
use crate::clock::ScenarioClock;
use crate::events::EventLog;

/// How long a TCP client may stay idle before the server closes its connection.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;

/// An authoritative DNS server for a set of [`Zone`]s, ready to [`serve`](Self::serve).
pub struct DnsServer {
    handler: QueryHandler,
}

impl DnsServer {
    /// Builds authoritative zones: an SOA and an NS record are generated for each origin, and
    /// every record is checked and placed in the most specific zone covering its name.
    ///
    /// Queries will be recorded into `log` as [`EventKind::DnsQuery`](crate::events::EventKind).
    /// No faults: [`with_faults`](Self::with_faults) without any.
    ///
    /// # Errors
    ///
    /// A [`DnsError`] naming the offending zone or record: an invalid name, a duplicate
    /// origin, a record outside every zone, or a CNAME that is not alone at its name.
    pub fn new(zones: &[Zone], log: EventLog) -> Result<Self, DnsError> {
        Self::with_faults(zones, Vec::new(), ScenarioClock::new(), log)
    }

    /// Like [`new`](Self::new), with per-query faults. For each query, the first fault in
    /// `faults` that matches its name (and type, if the fault has one) and is active applies:
    /// its window `from..until` on `clock` is open and its `first` limit is not used up (each
    /// fault counts the queries it was applied to). The query's event says which fault was
    /// applied, e.g. `SERVFAIL (fault servfail)`, `no answer (fault timeout)`,
    /// `NOERROR 2001:db8::2 (fault delay 3s)` or `NOERROR (truncated, fault truncate)`.
    ///
    /// # Errors
    ///
    /// Those of [`new`](Self::new), and for a fault: an invalid name, a name outside every
    /// zone ([`DnsError::FaultOutsideZones`]), a record type other than A, AAAA, MX, PTR, TXT,
    /// CNAME, SOA, NS or ANY ([`DnsError::UnknownRecordType`]), or a fault that can never apply
    /// ([`DnsError::UselessFault`]: a window ending before it starts, or `first` of 0).
    pub fn with_faults(
        zones: &[Zone],
        faults: Vec<DnsFault>,
        clock: ScenarioClock,
        log: EventLog,
    ) -> Result<Self, DnsError> {
        let catalog = build_catalog(zones)?;
        let faults = FaultSet::new(zones, faults, clock)?;
        Ok(Self {
            handler: QueryHandler::new(catalog, faults, log),
        })
    }

    /// Serves on sockets the caller already bound (the lab binds them inside a network
    /// namespace). Must be called from within a tokio runtime; the server runs on it until
    /// [`RunningDns::shutdown`] or until the [`RunningDns`] is dropped.
    ///
    /// # Errors
    ///
    /// [`DnsError::NoRuntime`] outside a runtime, [`DnsError::NoSockets`] if both lists are
    /// empty, [`DnsError::Socket`] if a socket cannot be made non-blocking or registered.
    pub fn serve(self, udp: Vec<UdpSocket>, tcp: Vec<TcpListener>) -> Result<RunningDns, DnsError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(DnsError::NoRuntime);
        }
        if udp.is_empty() && tcp.is_empty() {
            return Err(DnsError::NoSockets);
        }
        let mut udp_addrs = Vec::with_capacity(udp.len());
        let mut udp_sockets = Vec::with_capacity(udp.len());
        for socket in udp {
            let addr = socket.local_addr().ok();
            let failed = |source| DnsError::Socket {
                what: describe("UDP socket", addr),
                source,
            };
            socket.set_nonblocking(true).map_err(failed)?;
            udp_sockets.push(tokio::net::UdpSocket::from_std(socket).map_err(failed)?);
            udp_addrs.extend(addr);
        }
        let mut tcp_addrs = Vec::with_capacity(tcp.len());
        let mut tcp_listeners = Vec::with_capacity(tcp.len());
        for listener in tcp {
            let addr = listener.local_addr().ok();
            let failed = |source| DnsError::Socket {
                what: describe("TCP listener", addr),
                source,
            };
            listener.set_nonblocking(true).map_err(failed)?;
            tcp_listeners.push(tokio::net::TcpListener::from_std(listener).map_err(failed)?);
            tcp_addrs.extend(addr);
        }

        let handler = Arc::new(self.handler);
        let mut server = Server::new(SharedHandler(handler.clone()));
        let (stop_udp, shutdown) = watch::channel(false);
        // UDP is served here rather than by hickory's `Server`, which spawns a task per
        // datagram and sends each answer through a channel to the socket's task: each receive
        // loop answers its datagrams itself, one after the other (the zones are in memory; a
        // delayed answer is sent from a task of its own). One loop per runtime worker.
        let loops = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let mut udp_tasks = JoinSet::new();
        for socket in udp_sockets {
            let socket = Arc::new(socket);
            for _ in 0..loops {
                udp_tasks.spawn(serve_udp(socket.clone(), handler.clone(), shutdown.clone()));
            }
        }
        let has_tcp = !tcp_listeners.is_empty();
        for listener in tcp_listeners {
            server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        }
        Ok(RunningDns {
            server,
            udp_tasks,
            stop_udp,
            has_tcp,
            udp_addrs,
            tcp_addrs,
        })
    }
}

fn describe(kind: &str, addr: Option<SocketAddr>) -> String {
    match addr {
        Some(addr) => format!("{kind} {addr}"),
        None => format!("{kind} (unknown address)"),
    }
}

/// A DNS server that is answering queries. Stops on [`shutdown`](Self::shutdown) or drop.
pub struct RunningDns {
    server: Server<SharedHandler>,
    udp_tasks: JoinSet<()>,
    stop_udp: watch::Sender<bool>,
    has_tcp: bool,
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
}

impl RunningDns {
    /// The local addresses of the UDP sockets being served.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The local addresses of the TCP listeners being served.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Stops accepting queries and waits until every socket is closed.
    pub async fn shutdown(mut self) {
        self.stop_udp.send_replace(true);
        while self.udp_tasks.join_next().await.is_some() {}
        if self.has_tcp {
            if let Err(error) = self.server.shutdown_gracefully().await {
                warn!(%error, "DNS server stopped with an error");
            }
        }
    }
}

impl Drop for RunningDns {
    /// Stops the server; its tasks end (and close their sockets) shortly after.
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
        self.stop_udp.send_replace(true);
        // The UDP loops end on the cancellation; detach them rather than abort them.
        self.udp_tasks.detach_all();
    }
}

/// The [`QueryHandler`], shared by hickory's `Server` (TCP) and the UDP loops.
struct SharedHandler(Arc<QueryHandler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Receives queries on `socket` and answers them until `shutdown`, doing what hickory's
/// `Server` does for UDP: datagrams shorter than a header, responses, and those from an
/// address that cannot be answered are dropped; a malformed query gets FORMERR.
async fn serve_udp(
    socket: Arc<tokio::net::UdpSocket>,
    handler: Arc<QueryHandler>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 4096];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) => {
                warn!(%error, "error receiving on a DNS UDP socket");
                continue;
            }
        };
        if !answerable(src) {
            debug!(%src, "cannot answer a DNS query from this address");
            continue;
        }
        let bytes = &buffer[..len];
        let mut decoder = BinDecoder::new(bytes);
        let Ok(header) = Header::read(&mut decoder) else {
            continue;
        };
        let responder = UdpResponder {
            socket: socket.clone(),
            dst: src,
        };
        let request = match Request::from_bytes(bytes.to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(error) => {
                debug!(%error, %src, "malformed DNS query");
                let queries =
                    Queries::read(&mut BinDecoder::new(&[]), 0).expect("no queries to read");
                let response = MessageResponseBuilder::new(&queries, None)
                    .error_msg(&header.metadata, ResponseCode::FormErr);
                if let Err(error) = responder.clone().send_response(response).await {
                    warn!(%error, "failed to return FORMERR to client");
                }
                continue;
            }
        };
        if request.metadata.message_type == MessageType::Response {
            continue;
        }
        handler
            .handle_request::<_, TokioTime>(&request, responder)
            .await;
    }
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

/// Sends a response to one UDP client, encoded as hickory's `ResponseHandle` does: at most
/// the EDNS payload size (512 bytes without EDNS), truncated (TC) beyond it.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<tokio::net::UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
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
        let id = response.metadata().id;
        let max_size = match response.edns() {
            Some(edns) => edns.max_payload(),
            None => 512,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(err) => {
                error!(error = %err, "error encoding message");
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                encoder.set_max_size(512);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                header.emit(&mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}
