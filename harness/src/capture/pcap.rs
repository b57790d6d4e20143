//! Recording every packet on some interfaces of a namespace into a pcap file.
//!
//! [`record`] opens one `AF_PACKET`/`SOCK_RAW` socket per interface inside the namespace (the
//! same way as the SYN watch), with no filter and outgoing packets included, and hands them to a
//! dedicated OS thread that polls them and streams each frame, with its kernel receive
//! timestamp (`SO_TIMESTAMPNS`), through a `BufWriter` into a classic pcap file (Ethernet link
//! type, nanosecond timestamps). Memory stays bounded whatever the traffic: frames go to the
//! file as they are read.
//!
//! On the router, recording on the interfaces facing every host shows each forwarded packet
//! twice: once arriving on the sender's link and once leaving on the receiver's (with the TTL or
//! hop limit one lower and other MAC addresses). That is deliberate: a packet seen arriving but
//! never leaving was dropped by the router, which is how network faults show up.
//!
//! The thread is not a tokio task: file writes never block a runtime worker, and [`record`]
//! works inside or outside a runtime. [`PcapRecorder::stop`] wakes the thread, which reads what
//! is still queued on the sockets, flushes and closes the file.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use super::{bind_packet_socket, packet_socket, setsockopt, CaptureError, LOOKUP};

/// Largest frame kept whole; longer ones (GSO super-packets on veth) are truncated to this and
/// recorded with their real length.
pub const SNAP_LEN: u32 = 262_144;
/// Receive buffer asked for on each socket, so bursts are not dropped while the file is written.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;
/// Buffer between the capture thread and the file.
const FILE_BUFFER: usize = 256 << 10;
/// Packets read from one socket before the others get a turn.
const BATCH: usize = 64;
/// When stopping, packets read from one socket at most (the queue is bounded by its receive
/// buffer; this only guards against a flood that never ends).
const DRAIN_LIMIT: usize = 100_000;

/// What a finished recording holds; returned by [`PcapRecorder::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Packets written to the file.
    pub packets: u64,
    /// Packets longer than [`SNAP_LEN`], written truncated.
    pub truncated: u64,
    /// Packets the kernel dropped because a socket's receive buffer was full (from
    /// `PACKET_STATISTICS`): not in the file.
    pub dropped: u64,
}

/// A running recording; see [`record`].
///
/// [`PcapRecorder::stop`] ends it and reports errors. Dropping it stops it too (and flushes the
/// file), ignoring errors. While it runs, its sockets keep the namespace alive.
#[derive(Debug)]
pub struct PcapRecorder {
    path: PathBuf,
    /// An eventfd: written once to ask the thread to finish.
    wake: OwnedFd,
    thread: Option<JoinHandle<Result<PcapStats, CaptureError>>>,
}

impl PcapRecorder {
    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops recording: packets already queued on the sockets are written, then the file is
    /// flushed and closed. Blocks until then (normally well under a millisecond, plus the
    /// flush).
    pub fn stop(mut self) -> Result<PcapStats, CaptureError> {
        self.finish().unwrap_or(Err(CaptureError::Pcap {
            path: self.path.clone(),
            action: "stopping the recording",
            source: io::Error::other("already stopped"),
        }))
    }

    fn finish(&mut self) -> Option<Result<PcapStats, CaptureError>> {
        let thread = self.thread.take()?;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64 to the eventfd we own.
        let written = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if written < 0 {
            // Cannot happen with a counter this small; the thread would never wake, so do not
            // wait for it.
            let e = io::Error::last_os_error();
            tracing::warn!(path = %self.path.display(), error = %e, "could not stop pcap recording");
            return Some(Err(CaptureError::Pcap {
                path: self.path.clone(),
                action: "waking the capture thread",
                source: e,
            }));
        }
        Some(match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }
}

impl Drop for PcapRecorder {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.finish() {
            tracing::warn!(path = %self.path.display(), error = %e, "pcap recording failed");
        }
    }
}

/// Starts recording every packet, received or sent, on `interfaces` of namespace `ns` into a
/// new pcap file at `path` (created or truncated; its directory must exist).
///
/// One `AF_PACKET`/`SOCK_RAW` socket per interface is created inside the namespace and bound
/// to it; a name given twice is recorded once. Frames are written with Ethernet link type and
/// the kernel's receive timestamps in nanoseconds, in the order read (sorted by timestamp within
/// each batch, so a forwarded packet's two copies appear in order). Every packet that crosses
/// an interface after this function returns is recorded (unless the kernel drops it for lack of
/// buffer space; see [`PcapStats::dropped`]).
///
/// Needs CAP_NET_RAW in the namespace. Does not need a tokio runtime: a dedicated thread does
/// the work until [`PcapRecorder::stop`].
pub fn record(
    ns: &netns::Namespace,
    interfaces: &[String],
    path: &Path,
) -> Result<PcapRecorder, CaptureError> {
    let mut names = Vec::new();
    let mut seen = BTreeSet::new();
    for interface in interfaces {
        if !seen.insert(interface.as_str()) {
            continue;
        }
        let name = CString::new(interface.as_str())
            .ok()
            .filter(|n| {
                !n.is_empty() && n.as_bytes().len() < libc::IFNAMSIZ && !interface.contains('/')
            })
            .ok_or_else(|| CaptureError::InvalidInterface(interface.clone()))?;
        names.push((interface.clone(), name));
    }
    let opened = ns.run(|| {
        names
            .iter()
            .map(|(interface, name)| {
                open_socket(name).map_err(|(action, source)| (interface.clone(), action, source))
            })
            .collect::<Result<Vec<OwnedFd>, _>>()
    })?;
    let sockets = opened.map_err(|(interface, action, source)| {
        if action == LOOKUP {
            CaptureError::NoSuchInterface {
                namespace: ns.label().to_owned(),
                interface,
            }
        } else {
            CaptureError::Socket {
                namespace: ns.label().to_owned(),
                interface,
                action,
                source,
            }
        }
    })?;
    let pcap_error = |action: &'static str, source: io::Error| CaptureError::Pcap {
        path: path.to_owned(),
        action,
        source,
    };
    // SAFETY: plain eventfd call; the descriptor is owned at once.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(pcap_error(
            "creating an eventfd",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let wake = unsafe { OwnedFd::from_raw_fd(raw) };
    let wake_for_thread = wake
        .try_clone()
        .map_err(|e| pcap_error("duplicating the eventfd", e))?;

    let file = File::create(path).map_err(|e| pcap_error("creating the file", e))?;
    let header = PcapHeader {
        snaplen: SNAP_LEN,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::native(),
        ..PcapHeader::default()
    };
    let writer = PcapWriter::with_header(BufWriter::with_capacity(FILE_BUFFER, file), header)
        .map_err(|e| pcap_error("writing the pcap header", into_io(e)))?;

    let labels: Vec<String> = names
        .iter()
        .map(|(interface, _)| format!("{}/{interface}", ns.label()))
        .collect();
    let capture = Capture {
        path: path.to_owned(),
        sockets: sockets
            .into_iter()
            .zip(labels)
            .map(|(fd, label)| Source {
                fd: Some(fd),
                label,
            })
            .collect(),
        wake: wake_for_thread,
        writer,
        stats: PcapStats::default(),
        buf: vec![0u8; SNAP_LEN as usize],
        batch: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("mxlab-pcap".into())
        .spawn(move || capture.run())
        .map_err(CaptureError::Thread)?;
    tracing::debug!(path = %path.display(), namespace = ns.label(), ?interfaces, "recording packets");
    Ok(PcapRecorder {
        path: path.to_owned(),
        wake,
        thread: Some(thread),
    })
}

fn into_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

/// Opens and binds one unfiltered packet socket in the calling thread's namespace, with
/// nanosecond receive timestamps. The error carries the step that failed.
fn open_socket(interface: &CString) -> Result<OwnedFd, (&'static str, io::Error)> {
    let fail = |action: &'static str| Err((action, io::Error::last_os_error()));
    let (socket, index) = packet_socket(interface, libc::SOCK_RAW)?;
    let fd = socket.as_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: an int option.
    if unsafe { setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one) } < 0 {
        return fail("enabling SO_TIMESTAMPNS");
    }
    // A larger buffer than the default: FORCE (root) ignores rmem_max; otherwise take what
    // SO_RCVBUF allows. Either failing only means more drops under load.
    // SAFETY: int options.
    unsafe {
        if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RECEIVE_BUFFER) < 0 {
            let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RECEIVE_BUFFER);
        }
    }
    bind_packet_socket(&socket, index)?;
    Ok(socket)
}

/// One frame as read: timestamp, length on the wire, and the bytes kept.
struct Frame {
    timestamp: Duration,
    orig_len: u32,
    data: Vec<u8>,
}

/// Receives one frame without blocking into `buf`: its timestamp (kernel's, or now) and real
/// length (which may exceed `buf.len()`).
fn receive(fd: libc::c_int, buf: &mut [u8]) -> io::Result<(Duration, usize)> {
    // Room for one cmsghdr with a timespec, aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg describes buffers valid for writes of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut timestamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen; SCM_TIMESTAMPNS data is a timespec (read unaligned to be safe).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                if ts.tv_sec >= 0 && (0..1_000_000_000).contains(&ts.tv_nsec) {
                    timestamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let timestamp = timestamp.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    });
    Ok((timestamp, n as usize))
}

struct Source {
    /// None once the socket failed for good (e.g. its interface was deleted).
    fd: Option<OwnedFd>,
    label: String,
}

/// The capture thread's state.
struct Capture {
    path: PathBuf,
    sockets: Vec<Source>,
    wake: OwnedFd,
    writer: PcapWriter<BufWriter<File>>,
    stats: PcapStats,
    buf: Vec<u8>,
    batch: Vec<Frame>,
}

impl Capture {
    fn run(mut self) -> Result<PcapStats, CaptureError> {
        loop {
            let mut polled: Vec<libc::pollfd> = self
                .sockets
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            polled.push(libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: `polled` is a valid array of pollfd of the length given.
            let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.error("waiting for packets (poll)", e));
            }
            let stopping = polled.last().is_some_and(|p| p.revents != 0);
            for (i, p) in polled[..self.sockets.len()].iter().enumerate() {
                if stopping || p.revents != 0 {
                    let limit = if stopping { DRAIN_LIMIT } else { BATCH };
                    self.read_socket(i, limit);
                }
            }
            self.write_batch()?;
            if stopping {
                return self.close();
            }
        }
    }

    /// Reads up to `limit` frames from socket `i` into the batch.
    fn read_socket(&mut self, i: usize, limit: usize) {
        let source = &mut self.sockets[i];
        let Some(fd) = source.fd.as_ref().map(|fd| fd.as_raw_fd()) else {
            return;
        };
        for _ in 0..limit {
            match receive(fd, &mut self.buf) {
                Ok((timestamp, len)) => {
                    let kept = len.min(self.buf.len());
                    if kept < len {
                        self.stats.truncated += 1;
                    }
                    self.batch.push(Frame {
                        timestamp,
                        orig_len: u32::try_from(len).unwrap_or(u32::MAX),
                        data: self.buf[..kept].to_vec(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Reported once when the interface goes down; packets resume when it is up.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    tracing::debug!(interface = %source.label, "interface down");
                }
                Err(e) => {
                    // E.g. ENODEV: the interface is gone. Keep recording the others.
                    tracing::debug!(interface = %source.label, error = %e, "stopped recording interface");
                    self.stats.dropped += dropped(fd);
                    source.fd = None;
                    return;
                }
            }
        }
    }

    /// Writes the batch in timestamp order.
    fn write_batch(&mut self) -> Result<(), CaptureError> {
        self.batch.sort_by_key(|f| f.timestamp);
        let mut batch = std::mem::take(&mut self.batch);
        for frame in batch.drain(..) {
            let packet = PcapPacket::new(frame.timestamp, frame.orig_len, &frame.data);
            if let Err(e) = self.writer.write_packet(&packet) {
                return Err(self.error("writing a packet", into_io(e)));
            }
            self.stats.packets += 1;
        }
        self.batch = batch;
        Ok(())
    }

    fn close(mut self) -> Result<PcapStats, CaptureError> {
        for source in &self.sockets {
            if let Some(fd) = &source.fd {
                self.stats.dropped += dropped(fd.as_raw_fd());
            }
        }
        let stats = self.stats;
        let path = self.path.clone();
        let buffered = self.writer.into_writer();
        let file = buffered.into_inner().map_err(|e| CaptureError::Pcap {
            path: path.clone(),
            action: "flushing the file",
            source: e.into_error(),
        })?;
        file.sync_data().map_err(|e| CaptureError::Pcap {
            path: path.clone(),
            action: "syncing the file",
            source: e,
        })?;
        tracing::debug!(path = %path.display(), ?stats, "pcap recording stopped");
        Ok(stats)
    }

    fn error(&self, action: &'static str, source: io::Error) -> CaptureError {
        CaptureError::Pcap {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

/// Packets the kernel dropped on this socket since the last call (`PACKET_STATISTICS` resets
/// the counters); 0 if unavailable.
fn dropped(fd: libc::c_int) -> u64 {
    // SAFETY: all-zero is a valid tpacket_stats.
    let mut stats: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: stats is writable for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if r < 0 {
        0
    } else {
        u64::from(stats.tp_drops)
    }
}

#[cfg(test)]
mod tests;
