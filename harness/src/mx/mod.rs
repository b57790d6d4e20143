//! The fake MX server: a small, real ESMTP server whose behaviour can be scripted per address
//! family, and which records every connection, command, reply, TLS handshake and accepted
//! message into the run's [`EventLog`].
//!
//! An [`MxBuilder`] (with limits, TLS and policies if needed) serves a set of already-bound
//! [`Listener`]s (one per address family of one host) and returns a [`RunningMx`] holding the
//! accepted messages.
//!
//! Modules: this one holds the public API and the accept loops; `builder` configures and
//! starts a server; `behaviour` the scripting
//! types ([`ListenerBehaviour`], [`StageRule`], ...); [`tls`] the per-run certificate
//! authority; `conn` drives one connection (and the STARTTLS handshake); `session` is the
//! I/O-free SMTP state machine; `line` frames command lines; `data` reads the DATA phase;
//! `reply` formats replies; [`policy`] holds the receiving-side policies (greylisting, PTR and
//! SPF checks, rate limits).
//!
//! SMTP behaviour, per RFC 5321: EHLO (PIPELINING, 8BITMIME, SIZE, STARTTLS when TLS is
//! configured, ENHANCEDSTATUSCODES, DSN when enabled, SMTPUTF8: see [`Extensions`]), HELO,
//! STARTTLS (RFC 3207), MAIL, RCPT, DATA, RSET, NOOP, VRFY (252), QUIT. HELO/EHLO is required
//! before MAIL; RCPT needs a successful MAIL; DATA needs a recipient. A 4xx greeting is sent
//! and the connection closed; after a 5xx greeting everything but QUIT gets 503. Scripted
//! replies, stalls, disconnects and slow replies per stage are [`StageRule`]s. Limits are in
//! [`Limits`].

mod behaviour;
mod builder;
mod conn;
mod data;
mod line;
pub mod policy;
mod reply;
mod session;
mod stage;
pub mod tls;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod snapshots;
#[cfg(test)]
mod tests;

pub use behaviour::{Cut, Extensions, ListenerBehaviour, StageAction, StageRule};
pub use builder::MxBuilder;
pub use policy::{GreylistKey, Policy, PolicyContext, PolicyDns, PolicyState};
pub use stage::SmtpStage;
pub use tls::{Authority, TlsError, TlsMode};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::events::{EventLog, SessionId};
use crate::family::Family;

/// A listening socket with its family's behaviour.
///
/// The socket is already bound and listening (the lab binds it inside a network namespace).
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub socket: std::net::TcpListener,
    /// The family reported in events for connections on this socket.
    pub family: Family,
    /// How sessions on this socket behave.
    pub behaviour: ListenerBehaviour,
}

/// Size and time limits of a server. [`Limits::default`] is what an [`MxBuilder`] uses unless
/// given others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line in bytes, not counting CRLF (default 2048). Longer lines get
    /// `500 5.5.2` and the session continues.
    pub max_line: usize,
    /// Largest message in bytes after dot-unstuffing (default 50 MiB, advertised as `SIZE`).
    /// Larger messages get `552 5.3.4`, as does a MAIL whose `SIZE=` exceeds it.
    pub max_message: usize,
    /// Most recipients per transaction (default 1000); more get `452 4.5.3`.
    pub max_recipients: usize,
    /// A session waiting this long for the client (default 300 s) gets `421 4.4.2` and is
    /// closed. Also bounds each write.
    pub idle_timeout: Duration,
    /// After the server closes a session (QUIT, 4xx greeting, timeout) it half-closes and
    /// waits at most this long (default 2 s) for the client to close, so the client reads the
    /// last reply rather than a connection reset.
    pub linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: 2048,
            max_message: 50 * 1024 * 1024,
            max_recipients: 1000,
            idle_timeout: Duration::from_secs(300),
            linger: Duration::from_secs(2),
        }
    }
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The session that delivered it.
    pub session: SessionId,
    /// The family of that session's listener.
    pub family: Family,
    /// Envelope sender; empty for the null sender `<>`.
    pub from: String,
    /// Envelope recipients, in the order they were accepted.
    pub to: Vec<String>,
    /// The content after dot-unstuffing, ending with the CRLF of its last line.
    pub content: Vec<u8>,
    /// Hex SHA-256 of `content`.
    pub digest: String,
    /// The TLS protocol and cipher suite if the message came over STARTTLS, e.g.
    /// `TLSv1.3 TLS13_AES_256_GCM_SHA384`; `None` for plain text.
    pub tls: Option<String>,
}

/// Shared counter so session ids are unique across all servers of a run. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct SessionIds(Arc<AtomicU64>);

impl SessionIds {
    /// A fresh counter; the first id it hands out is 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id.
    pub fn next_id(&self) -> SessionId {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MxError {
    /// A listening socket could not be handed to the async runtime.
    #[error("{host}: cannot serve the {family} listener: {source}")]
    Listener {
        /// The server's short name.
        host: String,
        /// The listener's family.
        family: Family,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A listener wants TLS but no [`Authority`] was given, or its certificate could not be
    /// made.
    #[error("{host}: cannot set up TLS ({mode}) for the {family} listener: {reason}")]
    Tls {
        /// The server's short name.
        host: String,
        /// The listener's family.
        family: Family,
        /// The listener's TLS mode.
        mode: TlsMode,
        /// What went wrong.
        reason: String,
    },
    /// The policy DNS worker of a host could not be started ([`PolicyDns::in_namespace`]).
    #[error("{host}: cannot start the policy DNS resolver: {source}")]
    PolicyResolver {
        /// The server's short name.
        host: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A listener has policies that need DNS ([`Policy::needs_dns`]) but the
    /// [`PolicyContext`] has no [`PolicyDns`].
    #[error("{host}: the {family} listener's policy {policy} needs DNS, but no policy resolver was given")]
    PolicyDns {
        /// The server's short name.
        host: String,
        /// The listener's family.
        family: Family,
        /// The policy.
        policy: String,
    },
}

/// What every session of one listener needs.
struct Shared {
    host: String,
    hostname: String,
    family: Family,
    behaviour: Arc<ListenerBehaviour>,
    /// Sessions started on this listener so far (for rules that cover the first N).
    sessions: Arc<std::sync::atomic::AtomicU32>,
    /// The rustls configuration for STARTTLS (`None` when the mode presents no certificate).
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    /// Shared policy state and the policy DNS.
    policy: PolicyContext,
    local: SocketAddr,
    log: EventLog,
    messages: Arc<Mutex<Vec<StoredMessage>>>,
}

impl Shared {
    fn store(&self, message: StoredMessage) {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(message);
    }
}

/// A server that is serving. Dropping it aborts every task at once (without `SmtpClosed`
/// events); [`RunningMx::shutdown`] ends sessions cleanly.
#[derive(Debug)]
pub struct RunningMx {
    host: String,
    messages: Arc<Mutex<Vec<StoredMessage>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningMx {
    /// The server's short name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every message accepted so far, in order of acceptance.
    pub fn messages(&self) -> Vec<StoredMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops accepting and ends every session (each records `SmtpClosed` with reason
    /// `server shutdown`; clients see the connection close without a reply). Waits up to 5 s.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut self.tasks);
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!(host = %self.host, "mx shutdown timed out; aborting sessions");
        }
        // Anything still running is aborted by Drop.
    }
}

impl Drop for RunningMx {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Accepts connections until shutdown, then waits for the sessions to end. Aborting this task
/// aborts the sessions too (they live in its `JoinSet`).
async fn accept_loop(
    socket: TcpListener,
    shared: Arc<Shared>,
    ids: SessionIds,
    mut stop: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    let session_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, client)) => {
                    let id = ids.next_id();
                    sessions.spawn(conn::serve(stream, client, id, shared.clone(), session_stop.clone()));
                }
                Err(error) => {
                    // E.g. EMFILE or a connection reset before accept: back off and go on.
                    tracing::warn!(host = %shared.host, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = sessions.join_next(), if !sessions.is_empty() => reap(&shared, done),
            _ = stopped(&mut stop) => break,
        }
    }
    drop(socket);
    while let Some(done) = sessions.join_next().await {
        reap(&shared, done);
    }
}

/// Resolves once the server is told to stop (or the [`RunningMx`] is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|&stop| stop).await;
}

fn reap(shared: &Shared, done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        if error.is_panic() {
            tracing::error!(host = %shared.host, %error, "an smtp session panicked");
        }
    }
}
