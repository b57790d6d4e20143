//! Sockets for the reference sender, made only inside the SUT's network namespace.
//!
//! The sender's tasks run on a thread that was started inside the SUT namespace (see
//! [`super::Engine`]), so every socket they create lands there. [`NetIo`] does not rely on
//! that alone: before a socket is used it asks the kernel which namespace the socket belongs
//! to (`SIOCGSKNS`) and refuses it unless that is the SUT's. A socket made in the harness's
//! own namespace could reach the documentation prefixes on the machine's real network; this
//! check makes that impossible rather than unlikely.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::family::Family;

/// Identifies a network namespace: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsId {
    dev: u64,
    ino: u64,
}

impl NetnsId {
    /// The namespace a namespace file descriptor (e.g. `/proc/self/ns/net`) refers to.
    pub fn of_namespace_fd(fd: BorrowedFd<'_>) -> io::Result<NetnsId> {
        let stat = nix::sys::stat::fstat(fd)?;
        Ok(NetnsId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }

    /// The network namespace of the calling thread.
    pub fn of_current_thread() -> io::Result<NetnsId> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The network namespace a socket belongs to (`ioctl(SIOCGSKNS)`, Linux 4.9+).
    pub fn of_socket(socket: BorrowedFd<'_>) -> io::Result<NetnsId> {
        // SAFETY: SIOCGSKNS takes no argument and returns a new file descriptor, which is
        // owned (and closed) by the OwnedFd below.
        let raw = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGSKNS as _) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let ns = unsafe { OwnedFd::from_raw_fd(raw) };
        NetnsId::of_namespace_fd(ns.as_fd())
    }
}

/// Makes sockets and refuses any that is not in the SUT's network namespace.
#[derive(Debug, Clone, Copy)]
pub struct NetIo {
    netns: NetnsId,
}

impl NetIo {
    /// Sockets must belong to `netns`.
    pub fn new(netns: NetnsId) -> NetIo {
        NetIo { netns }
    }

    /// The namespace sockets must belong to.
    pub fn netns(&self) -> NetnsId {
        self.netns
    }

    /// Checks that `socket` lives in the SUT namespace. Where the kernel cannot say
    /// (`SIOCGSKNS` missing), checks the calling thread instead, which made the socket.
    pub fn check(&self, socket: BorrowedFd<'_>) -> io::Result<()> {
        let actual = match NetnsId::of_socket(socket) {
            Ok(id) => id,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                NetnsId::of_current_thread()?
            }
            Err(e) => return Err(e),
        };
        debug_assert_eq!(
            NetnsId::of_current_thread().ok(),
            Some(self.netns),
            "a reference sender socket was made on a thread outside the SUT namespace"
        );
        if actual == self.netns {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "refusing a socket outside the SUT network namespace \
                 (socket in {actual:?}, SUT is {:?})",
                self.netns
            )))
        }
    }

    /// A fresh TCP socket of `family`, checked.
    pub fn tcp_socket(&self, family: Family) -> io::Result<TcpSocket> {
        let socket = match family {
            Family::Ipv4 => TcpSocket::new_v4()?,
            Family::Ipv6 => TcpSocket::new_v6()?,
        };
        self.check(socket.as_fd())?;
        Ok(socket)
    }

    /// Connects to `address` from a checked socket (bound to `source` first, if given),
    /// giving up after `timeout`.
    pub async fn connect(
        &self,
        address: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let socket = self.tcp_socket(Family::of(address.ip()))?;
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind to source {source}: {e}"))
            })?;
        }
        match tokio::time::timeout(timeout, socket.connect(address)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {}", seconds(timeout)),
            )),
        }
    }

    /// A checked UDP socket bound to the unspecified address of `family`, port 0. Must be
    /// called inside a tokio runtime.
    pub fn udp_socket(&self, family: Family) -> io::Result<UdpSocket> {
        let any: SocketAddr = match family {
            Family::Ipv4 => (Ipv4Addr::UNSPECIFIED, 0).into(),
            Family::Ipv6 => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(any)?;
        self.check(socket.as_fd())?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }
}

/// `3s`, `1.5s`.
pub fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_with::root()]
    #[test]
    fn a_socket_of_this_namespace_passes_and_one_of_another_is_refused() {
        // SIOCGSKNS needs CAP_NET_ADMIN over the socket's network namespace.
        crate::test_support::require_root("reads a socket's network namespace");
        let here = NetnsId::of_current_thread().unwrap();
        let net = NetIo::new(here);
        let socket = TcpSocket::new_v4().unwrap();
        assert_eq!(NetnsId::of_socket(socket.as_fd()).unwrap(), here);
        net.check(socket.as_fd()).unwrap();

        let elsewhere = NetIo::new(NetnsId {
            dev: here.dev,
            ino: here.ino.wrapping_add(1),
        });
        // The debug assertion on the calling thread fires first in debug builds.
        let refused = std::panic::catch_unwind(|| elsewhere.check(socket.as_fd()));
        assert!(!matches!(refused, Ok(Ok(()))));
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(seconds(Duration::from_secs(3)), "3s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
    }
}
