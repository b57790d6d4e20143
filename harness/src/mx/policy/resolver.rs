//! The DNS that policies ask: a worker thread that has entered the MX host's network
//! namespace and runs its own single-threaded Tokio runtime with a hickory resolver (and the
//! mail-auth authenticator built on it).
//!
//! Why a thread rather than a custom hickory `RuntimeProvider`: a socket belongs to the
//! network namespace of the thread that creates it, and mail-auth 0.13's
//! `MessageAuthenticator` wraps the concrete `TokioResolver` (`Resolver<TokioRuntimeProvider>`),
//! so it cannot take a provider of ours. On a thread that did `setns`, every socket hickory or
//! mail-auth creates (UDP per query, TCP on truncation) is made inside the namespace, whatever
//! the library does: nothing can leak into the root namespace, whose network is real.
//!
//! The resolver asks only the given servers (no recursion, no hosts file, no search list, no
//! cache: each check sees the scenario DNS as it is at that moment, faults included).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use mail_auth::MessageAuthenticator;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{auth, ptr, spf, Answer, Lookup};

/// Per-query timeout of the policy resolver.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per query (per server).
pub const QUERY_ATTEMPTS: usize = 2;

/// A job for the worker.
type Job = (Lookup, oneshot::Sender<Answer>);

/// A handle on the policy DNS worker of one MX host. Cheap to clone; the worker thread ends
/// when the last clone is dropped (lookups still running are abandoned).
#[derive(Clone)]
pub struct PolicyDns {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::UnboundedSender<Job>,
    servers: Vec<SocketAddr>,
    place: String,
    /// The worker's thread, stopped (its lookups abandoned) when the last handle goes.
    _runtime: netns::RuntimeThread,
}

impl fmt::Debug for PolicyDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyDns")
            .field("servers", &self.inner.servers)
            .field("place", &self.inner.place)
            .finish()
    }
}

impl PolicyDns {
    /// A worker inside `namespace` (the MX host's) asking `servers` (the scenario DNS host's
    /// addresses, port 53; UDP, with TCP on the same port after truncation).
    ///
    /// The worker's thread lives in the namespace (keeping it alive) until the worker ends.
    /// Fails if the thread cannot be started or cannot enter the namespace.
    pub fn in_namespace(
        namespace: &netns::Namespace,
        servers: Vec<SocketAddr>,
    ) -> io::Result<Self> {
        spawn(
            format!("network namespace {}", namespace.label()),
            Some(namespace.fd()),
            servers,
        )
    }

    /// A worker in the caller's own network namespace: for tests on loopback only. Refuses
    /// servers that are not loopback addresses (in the root namespace anything else could
    /// leave the machine).
    pub fn loopback(servers: Vec<SocketAddr>) -> io::Result<Self> {
        if let Some(bad) = servers.iter().find(|s| !s.ip().is_loopback()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("policy DNS outside a lab namespace must be on loopback, not {bad}"),
            ));
        }
        spawn("the current network namespace".into(), None, servers)
    }

    /// The servers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.inner.servers
    }

    /// Answers `lookup` on the worker.
    pub(crate) async fn resolve(&self, lookup: Lookup) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.inner.jobs.send((lookup.clone(), tx)).is_err() {
            return lookup.failed("the policy DNS worker has stopped");
        }
        rx.await
            .unwrap_or_else(|_| lookup.failed("the policy DNS worker dropped the lookup"))
    }
}

/// Starts the worker thread and waits until its resolver is ready.
fn spawn(
    place: String,
    namespace: Option<BorrowedFd<'_>>,
    servers: Vec<SocketAddr>,
) -> io::Result<PolicyDns> {
    let runtime = netns::RuntimeThread::start("mxlab-policy-dns", namespace)?;
    let (jobs, queue) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    runtime
        .handle()
        .spawn(serve(servers.clone(), queue, ready_tx));
    ready_rx.recv().unwrap_or_else(|_| {
        Err(io::Error::other(
            "the policy DNS worker died while starting",
        ))
    })?;
    Ok(PolicyDns {
        inner: Arc::new(Inner {
            jobs,
            servers,
            place,
            _runtime: runtime,
        }),
    })
}

/// A resolver asking exactly `servers`.
fn resolver(servers: &[SocketAddr]) -> io::Result<TokioResolver> {
    let name_servers = servers
        .iter()
        .map(|server| {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            NameServerConfig::new(server.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = QUERY_ATTEMPTS;
    options.cache_size = 0;
    options.ndots = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.recursion_desired = false;
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .map_err(|e| io::Error::other(format!("cannot build the policy resolver: {e}")))
}

/// The worker: answers jobs concurrently until every [`PolicyDns`] is gone.
async fn serve(
    servers: Vec<SocketAddr>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let resolver = match resolver(&servers) {
        Ok(resolver) => resolver,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let authenticator = Arc::new(MessageAuthenticator(resolver.clone()));
    let resolver = Arc::new(resolver);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            job = queue.recv() => match job {
                Some((lookup, reply)) => {
                    let resolver = resolver.clone();
                    let authenticator = authenticator.clone();
                    running.spawn(async move {
                        let answer = answer(&resolver, &authenticator, lookup).await;
                        let _ = reply.send(answer);
                    });
                }
                None => break,
            },
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }
}

async fn answer(
    resolver: &TokioResolver,
    authenticator: &MessageAuthenticator,
    lookup: Lookup,
) -> Answer {
    match lookup {
        Lookup::Ptr(ip) => Answer::Ptr(ip, ptr::check(resolver, ip).await),
        Lookup::Spf {
            ip,
            helo,
            sender,
            host,
        } => Answer::Spf(spf::check(authenticator, ip, &helo, &sender, &host).await),
        Lookup::Auth {
            ip,
            helo,
            sender,
            host,
            message,
        } => Answer::Auth(auth::check(authenticator, ip, &helo, &sender, &host, &message).await),
    }
}
