//! The crate's error type.

use std::io;

/// Everything that can go wrong in this crate. Each message names the problem and, where one
/// is known, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process lacks the privileges for namespace or netlink work (EPERM/EACCES).
    #[error("{action} needs root or CAP_SYS_ADMIN+CAP_NET_ADMIN: run as root ({source})")]
    Privilege {
        /// What was being attempted, e.g. "creating a network namespace".
        action: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// `/dev/net/tun` cannot be opened, so no TUN device (and no path shaping) is possible.
    #[error(
        "cannot open {device} ({source}), which path shaping needs: run as root, or let this user \
         read and write {device} (Debian's udev gives it mode 0666)"
    )]
    TunAccess {
        /// The clone device, `/dev/net/tun`.
        device: String,
        /// The open's error.
        #[source]
        source: io::Error,
    },

    /// A namespace operation (unshare, setns, opening /proc/thread-self/ns/net) failed.
    #[error("network namespace {label}: {action} failed: {source}")]
    Namespace {
        /// The namespace's label.
        label: String,
        /// What was being attempted.
        action: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// A netlink request failed.
    #[error("network namespace {label}: netlink request \"{action}\" failed: {source}{hint}")]
    Netlink {
        /// The label of the namespace the request was made in.
        label: String,
        /// What was being attempted, e.g. "add veth mxlab-sut/mxlab0".
        action: String,
        /// The rtnetlink error (boxed: it can carry a whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
        /// A suggestion (may be empty).
        hint: String,
    },

    /// Writing a sysctl failed.
    #[error(
        "network namespace {label}: writing {value:?} to /proc/sys/{key} failed: {source}{hint}"
    )]
    Sysctl {
        /// The namespace's label.
        label: String,
        /// The key below /proc/sys, e.g. "net/ipv6/conf/all/forwarding".
        key: String,
        /// The value that was written.
        value: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
        /// A suggestion (may be empty).
        hint: String,
    },

    /// A link did not become operational (carrier up, queueing discipline attached) in time.
    #[error(
        "network namespace {label}: interface {interface} was still not operational after {waited:?} \
         (the kernel's link watch did not run; is the machine overloaded?)"
    )]
    LinkNotOperational {
        /// The namespace's label.
        label: String,
        /// The interface's name.
        interface: String,
        /// How long mxlab waited.
        waited: std::time::Duration,
    },

    /// An IPv6 address was added but the kernel had not yet made it local (its route in table
    /// `local`, which addrconf inserts from a work queue) in time.
    #[error(
        "network namespace {label}: address {address} on {interface} was still not local after \
         {waited:?} (the kernel's addrconf work did not run; is the machine overloaded?)"
    )]
    AddressNotLocal {
        /// The namespace's label.
        label: String,
        /// The interface's name.
        interface: String,
        /// The address.
        address: std::net::Ipv6Addr,
        /// How long mxlab waited.
        waited: std::time::Duration,
    },

    /// The topology specification is unusable.
    #[error("invalid topology spec: {0}")]
    InvalidSpec(String),

    /// The program of a command does not exist or is not executable.
    #[error(
        "program `{program}` not found or not executable{searched}: install it (e.g. with apt-get) \
         or give its absolute path"
    )]
    ProgramNotFound {
        /// The program as given to the `Command`.
        program: String,
        /// Where it was searched (e.g. " in PATH=/usr/bin:/bin"), may be empty.
        searched: String,
    },

    /// Spawning a process failed for another reason.
    #[error("starting `{program}` in network namespace {label} failed: {source}")]
    Spawn {
        /// The program as given to the `Command`.
        program: String,
        /// The namespace's label.
        label: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// Signalling or waiting for a spawned process failed.
    #[error("process {pid}: {action} failed: {source}")]
    Process {
        /// The process id.
        pid: u32,
        /// What was being attempted.
        action: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// An `nft` command exited with an error.
    #[error("network namespace {label}: nft could not {action}: {stderr}")]
    Nft {
        /// The namespace's label.
        label: String,
        /// What was being attempted, e.g. "add table inet mxlab_fault_0".
        action: String,
        /// What nft printed on stderr.
        stderr: String,
    },

    /// A helper OS thread could not be started or died unexpectedly.
    #[error("{action}: could not run a helper thread: {source}")]
    Thread {
        /// What the thread was for.
        action: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
}

/// Whether an OS error means "not privileged".
pub(crate) fn is_privilege_error(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

impl Error {
    /// Builds a `Privilege` error for EPERM/EACCES, or a `Namespace` error otherwise.
    pub(crate) fn namespace(label: &str, action: &str, source: io::Error) -> Error {
        if is_privilege_error(&source) {
            Error::Privilege {
                action: format!("{action} (namespace {label})"),
                source,
            }
        } else {
            Error::Namespace {
                label: label.to_owned(),
                action: action.to_owned(),
                source,
            }
        }
    }

    /// Builds a `Netlink` error with a hint derived from the kernel's error code.
    pub(crate) fn netlink(
        label: &str,
        action: impl Into<String>,
        source: rtnetlink::Error,
    ) -> Error {
        let action = action.into();
        let code = match &source {
            rtnetlink::Error::NetlinkError(msg) => msg.raw_code().abs(),
            _ => 0,
        };
        if code == libc::EPERM || code == libc::EACCES {
            return Error::Privilege {
                action: format!("netlink request \"{action}\" (namespace {label})"),
                source: io::Error::from_raw_os_error(code),
            };
        }
        let hint = match code {
            libc::EEXIST => ": the interface/address/route already exists in that namespace (duplicate host name or address in the spec?)",
            libc::ENODEV => ": no such interface in that namespace",
            libc::EOPNOTSUPP => ": the kernel lacks support for this (module not loaded?)",
            libc::ENETUNREACH => ": the gateway is not on a connected prefix: check that host and router addresses share the prefix",
            libc::EINVAL => ": the kernel rejected the request: check addresses and prefix lengths",
            _ => "",
        };
        Error::Netlink {
            label: label.to_owned(),
            action,
            source: Box::new(source),
            hint: hint.to_owned(),
        }
    }
}
