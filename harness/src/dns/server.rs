//! Starting and stopping the DNS server on sockets the caller has bound.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::Server;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::warn;

use super::error::DnsError;
use super::faults::{DnsFault, FaultSet};
use super::handler::QueryHandler;
use super::records::Zone;
use super::udp;
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
    /// zone ([`DnsError::FaultOutsideZones`]), or a fault that can never apply
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
    /// Each UDP socket is read by one loop per runtime worker, each answering its datagrams
    /// in turn; TCP connections are served by hickory's server.
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
        let (stop_udp, stop) = watch::channel(false);
        let loops = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let mut udp_tasks = JoinSet::new();
        for socket in udp_sockets {
            let socket = Arc::new(socket);
            for _ in 0..loops {
                udp_tasks.spawn(udp::serve(socket.clone(), handler.clone(), stop.clone()));
            }
        }
        let tcp = (!tcp_listeners.is_empty()).then(|| {
            let mut server = Server::new(Shared(handler));
            for listener in tcp_listeners {
                server.register_listener(listener, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
            }
            server
        });
        Ok(RunningDns {
            tcp,
            udp_tasks,
            stop_udp,
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
    /// hickory's server for the TCP listeners, if there are any.
    tcp: Option<Server<Shared>>,
    udp_tasks: JoinSet<()>,
    stop_udp: watch::Sender<bool>,
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
        if let Some(server) = &mut self.tcp {
            if let Err(error) = server.shutdown_gracefully().await {
                warn!(%error, "DNS server stopped with an error");
            }
        }
    }
}

impl Drop for RunningDns {
    /// Stops the server; its tasks end (and close their sockets) shortly after.
    fn drop(&mut self) {
        self.stop_udp.send_replace(true);
        // The UDP loops end on the signal; detach them rather than abort them mid-answer.
        self.udp_tasks.detach_all();
        if let Some(server) = &self.tcp {
            server.shutdown_token().cancel();
        }
    }
}

/// The [`QueryHandler`], shared by hickory's server (TCP) and the UDP loops.
struct Shared(Arc<QueryHandler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
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
