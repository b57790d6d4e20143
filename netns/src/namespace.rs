//! Anonymous network namespaces held by a file descriptor.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::CloneFlags;

use crate::{Error, Result};

/// An anonymous network namespace (not bind-mounted under /run/netns).
///
/// The namespace lives as long as this value's file descriptor, or any socket or process inside
/// it: a crashed harness leaks nothing. The label (e.g. "mxlab-1a2b3c-sut") only appears in
/// messages.
#[derive(Debug)]
pub struct Namespace {
    label: String,
    fd: OwnedFd,
}

impl Namespace {
    /// New anonymous network namespace, loopback up.
    ///
    /// The namespace is made by `unshare(CLONE_NEWNET)` on a fresh short-lived OS thread, which
    /// then opens `/proc/thread-self/ns/net`; the calling thread's namespace is untouched.
    pub fn create(label: &str) -> Result<Namespace> {
        let owned_label = label.to_owned();
        let fd = on_thread("creating a network namespace", move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::namespace(
                    &owned_label,
                    "creating a network namespace",
                    io::Error::from(e),
                )
            })?;
            let file = File::open("/proc/thread-self/ns/net").map_err(|e| {
                Error::namespace(&owned_label, "opening /proc/thread-self/ns/net", e)
            })?;
            loopback_up().map_err(|e| {
                Error::namespace(&owned_label, "bringing the loopback interface up", e)
            })?;
            Ok(OwnedFd::from(file))
        })??;
        tracing::debug!(label, "created network namespace");
        Ok(Namespace {
            label: label.to_owned(),
            fd,
        })
    }

    /// The label given at creation, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The namespace's file descriptor (usable with `setns` or a netlink `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a short-lived OS thread that entered this namespace (setns); sockets created
    /// inside stay in this namespace and can be handed to tokio afterwards.
    ///
    /// Blocks the caller until `f` returns. A panic in `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd.as_fd();
        let label = self.label.as_str();
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("mxlab-ns-run".into())
                .spawn_scoped(scope, move || {
                    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::namespace(label, "entering the namespace (setns)", e.into())
                    })?;
                    Ok(f())
                })
                .map_err(|source| Error::Thread {
                    action: format!("running code in network namespace {label}"),
                    source,
                })?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// The addresses configured on the namespace's interfaces other than loopback (IPv4 and
    /// IPv6, link-local IPv6 left out), in the kernel's order.
    pub fn addresses(&self) -> Result<Vec<std::net::IpAddr>> {
        self.run(interface_addresses)?
            .map_err(|e| Error::namespace(&self.label, "listing its addresses (getifaddrs)", e))
    }

    /// Writes a sysctl under /proc/sys from inside the namespace, e.g.
    /// ("net/ipv6/conf/all/forwarding", "1"). A dotted key without slashes
    /// ("net.ipv4.ip_forward") is accepted too.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let key_path = if key.contains('/') {
            key.to_owned()
        } else {
            key.replace('.', "/")
        };
        let sysctl_error = |source: io::Error, hint: &str| Error::Sysctl {
            label: self.label.clone(),
            key: key_path.clone(),
            value: value.to_owned(),
            source,
            hint: hint.to_owned(),
        };
        if key_path.starts_with('/')
            || key_path
                .split('/')
                .any(|part| part == ".." || part.is_empty())
        {
            return Err(sysctl_error(
                io::Error::from(io::ErrorKind::InvalidInput),
                ": give the key relative to /proc/sys, e.g. net/ipv4/ip_forward",
            ));
        }
        let path = format!("/proc/sys/{key_path}");
        self.run(|| std::fs::write(&path, value))?.map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => {
                    ": no such sysctl in this namespace: check the key (and that the interface it names exists here)"
                }
                io::ErrorKind::PermissionDenied => ": run as root",
                io::ErrorKind::InvalidInput => ": the kernel rejected the value",
                _ => "",
            };
            sysctl_error(e, hint)
        })?;
        tracing::trace!(label = %self.label, key = %key_path, value, "sysctl set");
        Ok(())
    }
}

/// Runs `f` on a fresh named OS thread and returns its result (panics propagate).
pub(crate) fn on_thread<F, R>(action: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name("mxlab-ns-new".into())
        .spawn(f)
        .map_err(|source| Error::Thread {
            action: action.to_owned(),
            source,
        })?;
    match thread.join() {
        Ok(r) => Ok(r),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Sets IFF_UP on "lo" in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name is NUL-terminated; the
    // socket is owned and closed by OwnedFd.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The calling thread's non-loopback, non-link-local interface addresses.
fn interface_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    use std::net::IpAddr;
    let mut found = Vec::new();
    for interface in nix::ifaddrs::getifaddrs()? {
        let Some(address) = interface.address else {
            continue;
        };
        let address = if let Some(sin) = address.as_sockaddr_in() {
            IpAddr::V4(sin.ip())
        } else if let Some(sin6) = address.as_sockaddr_in6() {
            IpAddr::V6(sin6.ip())
        } else {
            continue;
        };
        let link_local = matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !address.is_loopback() && !link_local {
            found.push(address);
        }
    }
    Ok(found)
}
