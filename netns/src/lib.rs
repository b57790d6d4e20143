//! Linux network namespaces, links, addresses, routes and processes for mxlab's test topologies.
//!
//! Namespaces are anonymous: each is held by a file descriptor (and by the sockets and processes
//! inside it), so a crashed harness leaks nothing. Every namespace and interface this crate
//! creates carries the `mxlab` prefix, and nothing is ever attached to the root namespace: veth
//! pairs are created inside the router namespace with their peer placed directly into the host
//! namespace.
//!
//! - [`Namespace`]: create one, run code inside it, set sysctls.
//! - [`Topology`]: a router namespace plus one namespace per host, built over netlink.
//! - [`spawn`] / [`output`]: processes inside a namespace, optionally with their own PID
//!   namespace and resolv.conf.
//! - [`Shaper`]: delay, jitter, reordering, duplication and a rate limit on one path, by a
//!   userspace shaper on a TUN device in the router namespace.
//! - [`ProcessNamespaces`] / [`run_in`] / [`enter_current_thread`]: joining namespaces that
//!   exist (a running process's, or a network namespace on a thread).
//! - [`RuntimeThread`]: a long-lived thread inside a network namespace running a tokio
//!   runtime, for in-process servers and clients whose sockets must live there.

mod error;
mod firewall;
mod join;
mod namespace;
mod process;
mod route;
mod runtime_thread;
mod shaper;
mod topology;

pub use error::Error;
pub use firewall::Firewall;
pub use join::{enter_current_thread, run_in, ProcessNamespaces};
pub use namespace::Namespace;
pub use process::{output, spawn, Process, SpawnOptions};
pub use route::{Route, RouteKind, Routes, Rule};
pub use runtime_thread::RuntimeThread;
pub use shaper::{check_tun_access, Direction, Shape, ShapedPath, Shaper, ShaperStats};
pub use topology::{HostSpec, LinkAddresses, Topology, TopologySpec};

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
