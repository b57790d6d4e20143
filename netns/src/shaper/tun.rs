//! A TUN device (IP packets, no link layer, no packet-information header) created inside a
//! namespace and read and written from tokio.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::{Error, Namespace, Result};

/// An open TUN device. The device exists as long as this value: closing the descriptor
/// deletes it (it is not persistent), with every route through it.
#[derive(Debug)]
pub(crate) struct Tun {
    fd: AsyncFd<OwnedFd>,
}

impl Tun {
    /// Creates the TUN device `name` inside `ns`. Must be called inside a tokio runtime.
    pub(crate) fn create(ns: &Namespace, name: &str) -> Result<Tun> {
        // The device lives in the namespace the clone device was opened in, so both the open
        // and the attach happen inside `ns`.
        let fd = ns.run(|| {
            let device = open_device()?;
            attach(device, name).map_err(|e| {
                Error::namespace(ns.label(), &format!("creating TUN device {name}"), e)
            })
        })??;
        // SAFETY: `fd` is an open descriptor owned by the `OwnedFd` moved into the `AsyncFd`:
        // it stays open and the same until the `AsyncFd` is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| {
                Error::namespace(
                    ns.label(),
                    &format!("registering TUN device {name}"),
                    e.into_parts().1,
                )
            })?;
        Ok(Tun { fd })
    }

    /// Reads one packet into `buf`, waiting for it.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| rustix::io::read(fd.get_ref(), &mut *buf).map_err(io::Error::from))
            {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one packet: the kernel receives it as if it arrived on the device. A TUN write
    /// does not block (the packet goes straight into the receive path).
    pub(crate) fn send(&self, packet: &[u8]) -> io::Result<()> {
        rustix::io::write(self.fd.get_ref(), packet)?;
        Ok(())
    }
}

/// The TUN clone device.
const TUN_DEVICE: &str = "/dev/net/tun";

/// Whether this process may create TUN devices, which path shaping needs: `/dev/net/tun` must
/// open for reading and writing. Root can; an ordinary user (also in rootless mode) only where
/// the device's mode lets it (Debian's udev makes it 0666, some containers keep it 0600).
///
/// # Errors
///
/// [`Error::TunAccess`], naming the fix, when the device does not open (no permission, or no
/// TUN driver).
pub fn check_tun_access() -> Result<()> {
    open_device().map(drop)
}

/// Opens the clone device non-blocking; the descriptor becomes a TUN device once attached.
fn open_device() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map(OwnedFd::from)
        .map_err(|source| Error::TunAccess {
            device: TUN_DEVICE.into(),
            source,
        })
}

/// Attaches the open clone device `fd` to a new TUN device `name` in the calling thread's
/// network namespace.
fn attach(fd: OwnedFd, name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1-15 bytes"),
        ));
    }
    // SAFETY: `ifreq` is plain data, valid when zeroed; the name is copied with room for its
    // NUL terminator (checked above); TUNSETIFF reads the struct and writes the final name
    // back into it, which outlives the call; `fd` is an open descriptor we own.
    let rc = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
