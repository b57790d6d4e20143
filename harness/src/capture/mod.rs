//! Observing TCP SYNs on the wire.
//!
//! Network faults (dropped SYNs, black holes) mean a fake MX server never sees some connection
//! attempts, so the harness watches the router's interface facing the system under test and
//! reports every TCP SYN towards an SMTP port: which address family the MTA tried, when, and
//! how often it retransmitted.
//!
//! [`watch_syns`] opens an `AF_PACKET` socket inside a namespace, bound to one interface, with a
//! classic BPF filter so only incoming TCP SYNs to the port reach userspace, and drives it from
//! a tokio task.

mod filter;
mod parse;
pub mod pcap;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use self::parse::{parse_syn, ParsedSyn};

/// A TCP SYN (without ACK) seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syn {
    /// The connecting side's address and port (the packet's source).
    pub client: SocketAddr,
    /// The address and port being connected to (the packet's destination). Its family is the
    /// connection's family.
    pub server: SocketAddr,
    /// 0 for the first SYN of this 4-tuple, 1, 2, ... for retransmissions of it (same 4-tuple
    /// and same initial sequence number). A later connection attempt that reuses the 4-tuple
    /// with a new initial sequence number starts at 0 again.
    pub retransmission: u32,
}

/// Why a SYN watch or a pcap recording could not be started (or, for [`pcap::PcapRecorder::stop`],
/// finished).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// [`watch_syns`] was called outside a tokio runtime.
    #[error("watching SYNs needs a tokio runtime: call watch_syns from inside one")]
    NoRuntime,
    /// The interface name cannot name an interface.
    #[error("invalid interface name {0:?}: 1-15 bytes, no NUL or '/'")]
    InvalidInterface(String),
    /// The namespace could not be entered.
    #[error(transparent)]
    Namespace(#[from] netns::Error),
    /// No interface of that name exists in the namespace.
    #[error("no interface {interface:?} in network namespace {namespace}")]
    NoSuchInterface {
        /// The namespace's label.
        namespace: String,
        /// The interface name asked for.
        interface: String,
    },
    /// A socket call failed.
    #[error(
        "{action} on {interface} in network namespace {namespace}: {source}{}",
        hint(source)
    )]
    Socket {
        /// The namespace's label.
        namespace: String,
        /// The interface being watched.
        interface: String,
        /// What failed, e.g. "creating an AF_PACKET socket".
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A pcap recording's file could not be written (or its helpers set up).
    #[error("pcap file {}: {action}: {source}", path.display())]
    Pcap {
        /// The file being written.
        path: std::path::PathBuf,
        /// What failed, e.g. "writing a packet".
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The pcap recording's thread could not be started.
    #[error("starting the pcap capture thread: {0}")]
    Thread(#[source] io::Error),
    /// The socket could not be registered with tokio's reactor.
    #[error("registering the packet socket for {interface} with tokio: {source}")]
    Register {
        /// The interface being watched.
        interface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (packet sockets need CAP_NET_RAW: run as root)",
        _ => "",
    }
}

/// A running SYN watch; see [`watch_syns`].
///
/// Stops on drop (the task is aborted and the socket closed) or with [`SynWatch::stop`]. While
/// it runs, its socket keeps the watched namespace alive.
#[derive(Debug)]
pub struct SynWatch {
    task: Option<JoinHandle<()>>,
}

impl SynWatch {
    /// Stops watching and waits until the task has ended: no callback runs after this returns.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Cancelled (or already ended): either way nothing is left to report.
            let _ = task.await;
        }
    }
}

impl Drop for SynWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts observing SYNs to TCP port `port` arriving on interface `interface` of namespace
/// `ns`.
///
/// An `AF_PACKET`/`SOCK_DGRAM` socket is created inside the namespace (so the interface is
/// looked up there), given a classic BPF filter so only incoming TCP SYNs without ACK to `port`
/// reach userspace, bound to the interface, made non-blocking and driven by tokio's `AsyncFd`
/// on a spawned task. Only packets received on the interface count (`PACKET_HOST` or
/// `PACKET_OTHERHOST`), never ones sent out of it. IPv4 and IPv6 are both reported.
///
/// Each SYN is passed to `on_syn` as it is read, on a tokio worker thread; `on_syn` should
/// return quickly (e.g. record into the event log or send on a channel). Every SYN that
/// arrives after this function returns is reported.
///
/// Must be called inside a tokio runtime. Needs CAP_NET_RAW in the namespace.
pub fn watch_syns(
    ns: &netns::Namespace,
    interface: &str,
    port: u16,
    on_syn: impl Fn(Syn) + Send + 'static,
) -> Result<SynWatch, CaptureError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| CaptureError::NoRuntime)?;
    let name = CString::new(interface)
        .ok()
        .filter(|n| {
            !n.is_empty() && n.as_bytes().len() < libc::IFNAMSIZ && !interface.contains('/')
        })
        .ok_or_else(|| CaptureError::InvalidInterface(interface.to_owned()))?;
    let socket = ns
        .run(|| open_socket(&name, port))?
        .map_err(|(action, source)| {
            if action == LOOKUP {
                CaptureError::NoSuchInterface {
                    namespace: ns.label().to_owned(),
                    interface: interface.to_owned(),
                }
            } else {
                CaptureError::Socket {
                    namespace: ns.label().to_owned(),
                    interface: interface.to_owned(),
                    action,
                    source,
                }
            }
        })?;
    let socket = {
        let _entered = runtime.enter();
        // SAFETY: the OwnedFd is moved into the AsyncFd and owns its descriptor, open and
        // unchanged until the AsyncFd drops it.
        unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(|e| {
            CaptureError::Register {
                interface: interface.to_owned(),
                source: e.into_parts().1,
            }
        })?
    };
    let label = format!("{}/{interface}", ns.label());
    tracing::debug!(interface = %label, port, "watching TCP SYNs");
    let task = runtime.spawn(read_loop(socket, port, label, on_syn));
    Ok(SynWatch { task: Some(task) })
}

const LOOKUP: &str = "looking up the interface";

/// Opens, filters and binds the packet socket in the calling thread's namespace. The error
/// carries the step that failed.
fn open_socket(interface: &CString, port: u16) -> Result<OwnedFd, (&'static str, io::Error)> {
    let fail = |action: &'static str| Err((action, io::Error::last_os_error()));
    // Bound only after the filter is attached, so no unfiltered packet reaches the queue.
    let (socket, index) = packet_socket(interface, libc::SOCK_DGRAM)?;
    let fd = socket.as_raw_fd();

    let mut program = filter::syn_filter(port);
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: fprog points at `program`, alive for the call; the kernel copies it.
    if unsafe { setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog) } < 0 {
        return fail("attaching the BPF filter");
    }
    // Outgoing packets are never wanted (the filter drops them too); older kernels lack the
    // option, so failure is ignored.
    let one: libc::c_int = 1;
    // SAFETY: an int option.
    let _ = unsafe { setsockopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one) };
    bind_packet_socket(&socket, index)?;
    Ok(socket)
}

/// An unbound, non-blocking AF_PACKET socket of `kind` (`SOCK_DGRAM` or `SOCK_RAW`) for
/// `interface` in the calling thread's namespace, with the interface's index. Protocol 0:
/// nothing is queued until [`bind_packet_socket`].
fn packet_socket(
    interface: &CString,
    kind: libc::c_int,
) -> Result<(OwnedFd, libc::c_uint), (&'static str, io::Error)> {
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(interface.as_ptr()) };
    if index == 0 {
        return Err((LOOKUP, io::Error::last_os_error()));
    }
    // SAFETY: plain socket call; the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(("creating an AF_PACKET socket", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok((unsafe { OwnedFd::from_raw_fd(raw) }, index))
}

/// Binds a packet socket to every protocol on the interface with `index`: packets start to
/// queue from here on.
fn bind_packet_socket(
    socket: &OwnedFd,
    index: libc::c_uint,
) -> Result<(), (&'static str, io::Error)> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as libc::c_ushort;
    address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    address.sll_ifindex = index as libc::c_int;
    // SAFETY: `address` is a sockaddr_ll of the size given.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err((
            "binding the packet socket to the interface",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// setsockopt with a typed value.
///
/// # Safety
/// `T` must be the type the option expects (pointers inside it must be valid for the call).
unsafe fn setsockopt<T>(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> libc::c_int {
    // SAFETY: the caller guarantees the option's type; the pointer and size describe `value`.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

/// Receives one packet without blocking: its length (at most `buf.len()`) and packet type.
fn receive(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, u8)> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buf and from are valid for writes of the sizes given.
    let n = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_ll).cast(),
            &mut from_len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, from.sll_pkttype))
}

/// Packets handled before yielding to other tasks.
const BATCH: usize = 64;

async fn read_loop(
    socket: AsyncFd<OwnedFd>,
    port: u16,
    label: String,
    on_syn: impl Fn(Syn) + Send + 'static,
) {
    let mut tracker = Tracker::default();
    let mut buf = vec![0u8; filter::SNAP_LEN as usize];
    loop {
        let mut guard = match socket.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!(interface = %label, error = %e, "SYN watch stopped");
                return;
            }
        };
        let mut handled = 0;
        while handled < BATCH {
            match receive(socket.get_ref(), &mut buf) {
                Ok((len, pkttype)) => {
                    handled += 1;
                    if pkttype != libc::PACKET_HOST && pkttype != libc::PACKET_OTHERHOST {
                        continue;
                    }
                    let Some(parsed) = parse_syn(&buf[..len]) else {
                        continue;
                    };
                    if parsed.server.port() != port {
                        continue;
                    }
                    let syn = tracker.observe(parsed, Instant::now());
                    tracing::trace!(interface = %label, ?syn, "SYN seen");
                    on_syn(syn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The interface went down (reported once); packets resume when it comes up.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    tracing::debug!(interface = %label, "interface down");
                }
                Err(e) => {
                    tracing::warn!(interface = %label, error = %e, "SYN watch stopped");
                    return;
                }
            }
        }
        if handled == BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// How long a 4-tuple is remembered after its last SYN (Linux's default SYN retries span
/// about two minutes).
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Tracked 4-tuples before stale ones are pruned.
const PRUNE_AT: usize = 1024;

/// Counts SYNs per 4-tuple to number retransmissions.
#[derive(Default)]
struct Tracker {
    seen: HashMap<(SocketAddr, SocketAddr), Seen>,
}

struct Seen {
    sequence: u32,
    count: u32,
    last: Instant,
}

impl Tracker {
    fn observe(&mut self, syn: ParsedSyn, now: Instant) -> Syn {
        if self.seen.len() >= PRUNE_AT {
            self.seen
                .retain(|_, seen| now.duration_since(seen.last) < FORGET_AFTER);
        }
        let entry = self.seen.entry((syn.client, syn.server)).or_insert(Seen {
            sequence: syn.sequence,
            count: 0,
            last: now,
        });
        let retransmission = if entry.sequence == syn.sequence && entry.count > 0 {
            entry.count
        } else {
            entry.sequence = syn.sequence;
            entry.count = 0;
            0
        };
        entry.count = retransmission.saturating_add(1);
        entry.last = now;
        Syn {
            client: syn.client,
            server: syn.server,
            retransmission,
        }
    }
}
