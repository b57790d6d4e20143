//! The event log: one timestamped stream of everything a run observed.
//!
//! Every part of a running lab (DNS server, fake MX servers, the system under test's driver)
//! records into the same [`EventLog`]. Assertions are predicates over its [`Event`]s and
//! reporters render them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::family::Family;

/// Identifies one SMTP session on one fake MX server, unique within a run.
pub type SessionId = u64;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The scenario DNS server answered (or deliberately did not answer) a query.
    DnsQuery {
        /// Address of the client that asked.
        client: IpAddr,
        /// `udp` or `tcp`.
        transport: String,
        /// The queried name.
        name: String,
        /// The queried record type, e.g. `AAAA`.
        record_type: String,
        /// The response code and answers, e.g. `NOERROR 2001:db8:0:3::2`.
        answer: String,
        /// From receiving the query to sending the answer (or deciding to send none); JSON
        /// `latency_seconds`.
        #[serde(with = "duration_secs", rename = "latency_seconds")]
        latency: Duration,
    },
    /// The SUT sent a TCP SYN towards a receiving host's SMTP port, seen on the router.
    TcpSyn {
        /// The host the SYN is addressed to (`mx1`, `bounces`, ...).
        host: String,
        /// The family of the connection.
        family: Family,
        /// The SUT's address and port.
        client: SocketAddr,
        /// The host's address and port.
        server: SocketAddr,
        /// 0 for the first SYN of a connection, then 1, 2, ... for retransmissions.
        retransmission: u32,
    },
    /// A fake MX server accepted a TCP connection.
    SmtpConnected {
        /// The host the server belongs to, e.g. `mx1` or `collector`.
        host: String,
        /// Session id, unique within the run.
        session: SessionId,
        /// The family of the listening address.
        family: Family,
        /// The client's address.
        client: SocketAddr,
        /// The server's address.
        server: SocketAddr,
    },
    /// A line the client sent (commands; message content is not logged line by line).
    SmtpCommand {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// The line, without CRLF.
        line: String,
    },
    /// A reply the server sent (multi-line replies are joined with `\n`).
    SmtpReply {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// The reply text, without the final CRLF.
        reply: String,
    },
    /// A STARTTLS handshake on a fake MX server succeeded or failed.
    SmtpTls {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// Protocol and cipher suite, e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384`, or
        /// `handshake failed: ...`.
        detail: String,
    },
    /// The server accepted a message at the end of DATA.
    MessageAccepted {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// Family of the session.
        family: Family,
        /// Envelope sender.
        from: String,
        /// Envelope recipients.
        to: Vec<String>,
        /// Size of the message content in bytes.
        size: usize,
        /// SHA-256 of the content after dot-unstuffing, hex.
        digest: String,
        /// The Message-ID header's value, if any.
        message_id: Option<String>,
    },
    /// The server's authentication results for a message it accepted (RFC 8601 words, e.g.
    /// `pass`, `fail`, `none`, with detail in parentheses), recorded after its
    /// `MessageAccepted` when the scenario asks for them.
    MessageAuth {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// The Message-ID header's value, if any.
        message_id: Option<String>,
        /// SPF of the MAIL FROM identity.
        spf: String,
        /// DKIM of the first signature.
        dkim: String,
        /// DMARC of the From domain.
        dmarc: String,
    },
    /// A session ended.
    SmtpClosed {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// Why: `quit`, `client closed`, `timeout`, an I/O error, ...
        reason: String,
    },
    /// The harness handed a message to the system under test.
    MessageInjected {
        /// Envelope sender.
        from: String,
        /// Envelope recipients.
        to: Vec<String>,
        /// The system under test's reply to the end of DATA.
        reply: String,
    },
    /// A line the system under test logged.
    SutLog {
        /// The log line.
        line: String,
    },
    /// The system under test's queue, as read once every message was accepted and at the end
    /// of the run.
    SutQueue {
        /// Messages still queued, each with its last error if the MTA gives one.
        entries: Vec<QueueEntry>,
    },
    /// A fault was put in force.
    FaultActivated {
        /// The fault, e.g. `blackhole on mx1 ipv6`.
        fault: String,
    },
    /// A fault was removed.
    FaultHealed {
        /// The fault, e.g. `blackhole on mx1 ipv6`.
        fault: String,
    },
    /// The bounce collector received a delivery status notification.
    DsnReceived {
        /// The `Final-Recipient:` of the failed delivery.
        recipient: Option<String>,
        /// The `Status:` field, e.g. `5.1.1`.
        status: Option<String>,
        /// The `Diagnostic-Code:` field, e.g. `smtp; 550 5.1.1 no such user`.
        diagnostic: Option<String>,
    },
    /// A receiving-side policy of a fake MX decided (greylisting, PTR or SPF check, rate
    /// limit); recorded just before the reply it leads to.
    Policy {
        /// The host the server belongs to.
        host: String,
        /// Session id.
        session: SessionId,
        /// The decision, e.g. `greylist 2001:db8::/64 <alice@sender.test>
        /// <bob@example.test>: first seen, 451 for 5s`.
        detail: String,
    },
    /// A harness-level note, e.g. that the run hit its time limit.
    Harness {
        /// What happened.
        message: String,
    },
}

/// One message in the system under test's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueEntry {
    /// The MTA's queue id.
    pub id: String,
    /// Envelope recipients still pending.
    pub recipients: Vec<String>,
    /// The last delivery error, if known.
    pub reason: Option<String>,
}

/// One observation with the time it was made, relative to the start of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Time since the log was created.
    #[serde(with = "duration_secs")]
    pub at: Duration,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A shared, append-only, ordered log of [`Event`]s. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    events: Mutex<Vec<Event>>,
    changed: Notify,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log whose clock starts now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                start: Instant::now(),
                events: Mutex::new(Vec::new()),
                changed: Notify::new(),
            }),
        }
    }

    /// Appends an event stamped with the current time.
    pub fn record(&self, kind: EventKind) {
        let at = self.inner.start.elapsed();
        self.inner
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Event { at, kind });
        self.inner.changed.notify_waiters();
    }

    /// Time elapsed since the log was created.
    pub fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }

    /// A copy of every event so far, in order.
    pub fn snapshot(&self) -> Vec<Event> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits until `done` holds for the events so far, or `timeout` passes. Returns whether
    /// `done` held.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Event]) -> bool) -> bool {
        self.wait_for(timeout, |events, _| done(events)).await
    }

    /// Like [`wait_until`](Self::wait_until), but `done` also gets the time elapsed and is
    /// checked at least every [`RECHECK`](Self::RECHECK) even without new events.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[Event], Duration) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.snapshot(), self.elapsed()) {
                return true;
            }
            let next = deadline.min(tokio::time::Instant::now() + Self::RECHECK);
            let _ = tokio::time::timeout_at(next, changed).await;
            if tokio::time::Instant::now() >= deadline {
                return done(&self.snapshot(), self.elapsed());
            }
        }
    }

    /// How often [`wait_until`](Self::wait_until) looks again without a new event.
    pub const RECHECK: Duration = Duration::from_millis(100);
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::DnsQuery {
                client,
                transport,
                name,
                record_type,
                answer,
                latency,
            } => write!(
                f,
                "dns   {client} {transport} {name} {record_type} -> {answer} ({:.1} ms)",
                latency.as_secs_f64() * 1000.0
            ),
            EventKind::TcpSyn {
                host,
                family,
                client,
                server,
                retransmission: 0,
            } => write!(f, "tcp   {host} {family} SYN {client} -> {server}"),
            EventKind::TcpSyn {
                host,
                family,
                client,
                server,
                retransmission,
            } => write!(
                f,
                "tcp   {host} {family} SYN {client} -> {server} (retransmission {retransmission}, \
                 kernel time: not scaled by the world clock)"
            ),
            EventKind::SmtpConnected {
                host,
                session,
                family,
                client,
                server,
            } => write!(
                f,
                "smtp  {host}#{session} {family} connect {client} -> {server}"
            ),
            EventKind::SmtpCommand {
                host,
                session,
                line,
            } => write!(f, "smtp  {host}#{session} C: {line}"),
            EventKind::SmtpReply {
                host,
                session,
                reply,
            } => write!(
                f,
                "smtp  {host}#{session} S: {}",
                reply.replace('\n', " | ")
            ),
            EventKind::SmtpTls {
                host,
                session,
                detail,
            } => write!(f, "smtp  {host}#{session} tls {detail}"),
            EventKind::MessageAccepted {
                host,
                session,
                family,
                from,
                to,
                size,
                ..
            } => write!(
                f,
                "smtp  {host}#{session} {family} accepted message <{from}> -> {} ({size} bytes)",
                to.join(", ")
            ),
            EventKind::MessageAuth {
                host,
                session,
                spf,
                dkim,
                dmarc,
                ..
            } => write!(
                f,
                "smtp  {host}#{session} authentication: spf={spf} dkim={dkim} dmarc={dmarc}"
            ),
            EventKind::SmtpClosed {
                host,
                session,
                reason,
            } => write!(f, "smtp  {host}#{session} closed ({reason})"),
            EventKind::MessageInjected { from, to, reply } => {
                write!(f, "sut   injected <{from}> -> {}: {reply}", to.join(", "))
            }
            EventKind::SutLog { line } => write!(f, "sut   {line}"),
            EventKind::SutQueue { entries } if entries.is_empty() => write!(f, "sut   queue empty"),
            EventKind::SutQueue { entries } => {
                write!(f, "sut   queue:")?;
                for entry in entries {
                    write!(
                        f,
                        " [{} -> {}: {}]",
                        entry.id,
                        entry.recipients.join(", "),
                        entry.reason.as_deref().unwrap_or("no reason given")
                    )?;
                }
                Ok(())
            }
            EventKind::FaultActivated { fault } => write!(f, "fault {fault}: active"),
            EventKind::FaultHealed { fault } => write!(f, "fault {fault}: healed"),
            EventKind::DsnReceived {
                recipient,
                status,
                diagnostic,
            } => write!(
                f,
                "dsn   for {}: status {}, {}",
                recipient.as_deref().unwrap_or("?"),
                status.as_deref().unwrap_or("?"),
                diagnostic.as_deref().unwrap_or("no diagnostic")
            ),
            EventKind::Policy {
                host,
                session,
                detail,
            } => write!(f, "smtp  {host}#{session} policy {detail}"),
            EventKind::Harness { message } => write!(f, "mxlab {message}"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>8.3}s  {}", self.at.as_secs_f64(), self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(message: &str) -> EventKind {
        EventKind::Harness {
            message: message.to_string(),
        }
    }

    #[test]
    fn a_retransmitted_syn_is_marked_as_kernel_time() {
        let syn = |retransmission| EventKind::TcpSyn {
            host: "mx1".into(),
            family: crate::family::Family::Ipv6,
            client: "[2001:db8::2]:40000".parse().unwrap(),
            server: "[2001:db8:0:3::2]:25".parse().unwrap(),
            retransmission,
        };
        assert!(!syn(0).to_string().contains("kernel time"));
        assert!(syn(1).to_string().contains("retransmission 1, kernel time"));
    }

    #[test]
    fn events_keep_their_order_and_rising_timestamps() {
        let log = EventLog::new();
        log.record(note("a"));
        log.record(note("b"));
        let events = log.snapshot();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, note("a"));
        assert!(events[0].at <= events[1].at);
    }

    #[tokio::test]
    async fn wait_until_wakes_on_a_matching_event() {
        let log = EventLog::new();
        let writer = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.record(note("done"));
        });
        let seen = log
            .wait_until(Duration::from_secs(5), |events| {
                events.iter().any(|e| e.kind == note("done"))
            })
            .await;
        assert!(seen);
    }

    #[tokio::test]
    async fn wait_until_rechecks_time_based_conditions_without_new_events() {
        let log = EventLog::new();
        let seen = log
            .wait_for(Duration::from_secs(5), |_, elapsed| {
                elapsed >= Duration::from_millis(250)
            })
            .await;
        assert!(seen);
        assert!(log.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn wait_until_gives_up_at_the_timeout() {
        let log = EventLog::new();
        let seen = log
            .wait_until(Duration::from_millis(30), |events| !events.is_empty())
            .await;
        assert!(!seen);
    }
}
