//! [`MxBuilder`]: how a fake MX is configured and started.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::{
    accept_loop, Authority, Limits, Listener, MxError, PolicyContext, RunningMx, SessionIds,
    Shared, TlsMode,
};
use crate::events::{EventKind, EventLog};

/// The configuration of one fake MX host: its names and event log (given to [`MxBuilder::new`]),
/// the already-bound [`Listener`]s it serves, and optionally the session id counter, [`Limits`],
/// the run's TLS [`Authority`] and the [`PolicyContext`].
///
/// ```no_run
/// # async fn example(socket: std::net::TcpListener) -> Result<(), mxlab::mx::MxError> {
/// use mxlab::events::EventLog;
/// use mxlab::family::Family;
/// use mxlab::mx::{Listener, ListenerBehaviour, MxBuilder};
///
/// let log = EventLog::new();
/// let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
///     .listener(Listener {
///         socket,
///         family: Family::Ipv4,
///         behaviour: ListenerBehaviour::normal("mx1.example.test"),
///     })
///     .try_start()?;
/// # drop(mx);
/// # Ok(())
/// # }
/// ```
pub struct MxBuilder {
    host: String,
    listeners: Vec<Listener>,
    config: Config,
}

/// What every listener of one server is served with.
struct Config {
    hostname: String,
    log: EventLog,
    ids: SessionIds,
    limits: Limits,
    authority: Option<Authority>,
    policy: PolicyContext,
}

impl MxBuilder {
    /// A server without listeners yet, with the default [`Limits`], no TLS, a fresh
    /// [`SessionIds`] counter and [`PolicyContext::default`]. `host` is the short name used in
    /// events (`mx1`, `bounces`), `hostname` the FQDN used in replies; every event goes to `log`.
    pub fn new(host: &str, hostname: &str, log: EventLog) -> Self {
        Self {
            host: host.to_string(),
            listeners: Vec::new(),
            config: Config {
                hostname: hostname.to_string(),
                log,
                ids: SessionIds::new(),
                limits: Limits::default(),
                authority: None,
                policy: PolicyContext::default(),
            },
        }
    }

    /// Serves `listener` too.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Serves every one of `listeners` too (one per address family of the host).
    pub fn listeners(mut self, listeners: impl IntoIterator<Item = Listener>) -> Self {
        self.listeners.extend(listeners);
        self
    }

    /// Takes session ids from `ids`; give every server of a run a clone of one counter so
    /// ids are unique across them.
    pub fn session_ids(mut self, ids: SessionIds) -> Self {
        self.config.ids = ids;
        self
    }

    /// Size and time limits instead of [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The run's TLS authority, which signs the certificates of listeners whose
    /// [`ListenerBehaviour::tls`](super::ListenerBehaviour::tls) is not [`TlsMode::Off`].
    /// Without it, a listener that wants TLS cannot be served.
    pub fn tls(mut self, authority: Authority) -> Self {
        self.config.authority = Some(authority);
        self
    }

    /// The run's shared [`PolicyState`](super::PolicyState) (one per run, a clone for every
    /// server), this host's [`PolicyDns`](super::PolicyDns) and the scenario clock. Without a
    /// resolver, a listener whose policies need DNS cannot be served.
    pub fn policy(mut self, context: PolicyContext) -> Self {
        self.config.policy = context;
        self
    }

    /// Starts serving every listener. Must be called inside a Tokio runtime. A listener that
    /// cannot be served (the runtime cannot register the socket, it wants TLS without an
    /// authority, its policies need DNS without a resolver) is skipped, with a `Harness` event
    /// saying so; [`try_start`](Self::try_start) returns the error instead.
    pub fn start(self) -> RunningMx {
        let mut server = RunningMx::new(&self.host);
        for listener in self.listeners {
            if let Err(error) = server.serve(&self.config, listener) {
                tracing::error!("{error}");
                self.config.log.record(EventKind::Harness {
                    message: error.to_string(),
                });
            }
        }
        server
    }

    /// Like [`start`](Self::start), but fails (serving nothing) if any listener cannot be
    /// served.
    pub fn try_start(self) -> Result<RunningMx, MxError> {
        let mut server = RunningMx::new(&self.host);
        for listener in self.listeners {
            server.serve(&self.config, listener)?;
        }
        Ok(server)
    }
}

impl RunningMx {
    fn new(host: &str) -> Self {
        Self {
            host: host.to_string(),
            messages: Arc::default(),
            stop: tokio::sync::watch::Sender::new(false),
            tasks: Vec::new(),
        }
    }

    /// Checks `listener` against `config` and spawns its accept loop.
    fn serve(&mut self, config: &Config, listener: Listener) -> Result<(), MxError> {
        if config.policy.dns.is_none() {
            if let Some(needy) = listener.behaviour.policies.iter().find(|p| p.needs_dns()) {
                return Err(MxError::PolicyDns {
                    host: self.host.clone(),
                    family: listener.family,
                    policy: needy.to_string(),
                });
            }
        }
        let mode = listener.behaviour.tls;
        let tls_error = |reason: String| MxError::Tls {
            host: self.host.clone(),
            family: listener.family,
            mode,
            reason,
        };
        let tls = match (mode, &config.authority) {
            (mode, _) if mode == TlsMode::Off || mode.never_completes() => None,
            (_, None) => return Err(tls_error("no certificate authority given".into())),
            (_, Some(authority)) => authority
                .server_config(&config.hostname, mode)
                .map_err(|e| tls_error(e.to_string()))?,
        };
        let error = |source| MxError::Listener {
            host: self.host.clone(),
            family: listener.family,
            source,
        };
        listener.socket.set_nonblocking(true).map_err(error)?;
        let local = listener.socket.local_addr().map_err(error)?;
        let socket = TcpListener::from_std(listener.socket).map_err(error)?;
        let shared = Arc::new(Shared {
            host: self.host.clone(),
            hostname: config.hostname.clone(),
            family: listener.family,
            behaviour: Arc::new(listener.behaviour),
            sessions: Default::default(),
            tls,
            limits: config.limits.clone(),
            policy: config.policy.clone(),
            local,
            log: config.log.clone(),
            messages: self.messages.clone(),
        });
        let task = accept_loop(socket, shared, config.ids.clone(), self.stop.subscribe());
        self.tasks.push(tokio::spawn(task));
        Ok(())
    }
}
