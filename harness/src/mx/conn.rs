//! One connection: drives a [`Session`] over a TCP stream (upgraded to TLS after STARTTLS) and
//! records what happens.
//!
//! Replies produced by one read are written together (RFC 2920 lets a server batch replies to
//! pipelined commands) and before the next read, so the client always gets every reply in order.
//! Slow replies are trickled in small pieces. Every await is bounded: reads, writes and the TLS
//! handshake by the idle timeout, the final drain by the linger time, and all of it by the
//! server's shutdown signal.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::policy::{Answer, AuthResults, Gate, Lookup};
use super::reply::Reply;
use super::session::{Accepted, Effect, Session};
use super::{stopped, Shared, StoredMessage, TlsMode};
use crate::events::{EventKind, SessionId};

/// What [`TlsMode::Alert`] sends in answer to a ClientHello: one TLS 1.2 record holding a
/// fatal (2) `handshake_failure` (40) alert (RFC 8446 §6).
const HANDSHAKE_FAILURE: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// What [`TlsMode::BrokenHandshake`] sends in answer to a ClientHello: not a TLS record.
const NOT_TLS: &[u8] = b"mxlab: this is not a TLS handshake\r\n";

/// How a conversation ended.
struct Ending {
    /// For the `SmtpClosed` event.
    reason: String,
    /// Whether the server chose to close (then it half-closes and drains, so the client reads
    /// the last reply instead of a reset).
    by_server: bool,
}

impl Ending {
    /// An ending after which the connection is simply dropped.
    fn now(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            by_server: false,
        }
    }
}

/// The connection, plain or upgraded.
enum Stream {
    /// Before STARTTLS (or without it).
    Plain(TcpStream),
    /// After a successful handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// Given up (a failed handshake consumed it); reads see EOF, writes fail.
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Bytes waiting to be written, each run at its pace (`None`: at once).
#[derive(Default)]
struct Output {
    runs: Vec<(Option<u32>, Vec<u8>)>,
}

impl Output {
    /// The buffer to append bytes of pace `pace` to.
    fn at(&mut self, pace: Option<u32>) -> &mut Vec<u8> {
        if self.runs.last().is_none_or(|(p, _)| *p != pace) {
            self.runs.push((pace, Vec::new()));
        }
        &mut self.runs.last_mut().expect("just pushed").1
    }

    fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Serves one accepted connection until it ends, then records `SmtpClosed`.
pub(crate) async fn serve(
    stream: TcpStream,
    client: SocketAddr,
    id: SessionId,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let server = stream.local_addr().unwrap_or(shared.local);
    shared.log.record(EventKind::SmtpConnected {
        host: shared.host.clone(),
        session: id,
        family: shared.family,
        client,
        server,
    });
    // Best effort: replies are small and already batched per read.
    let _ = stream.set_nodelay(true);
    let mut stream = Stream::Plain(stream);

    let ending = tokio::select! {
        ending = converse(&mut stream, client, id, &shared) => ending,
        _ = stopped(&mut shutdown) => Ending::now("server shutdown"),
    };
    shared.log.record(EventKind::SmtpClosed {
        host: shared.host.clone(),
        session: id,
        reason: ending.reason,
    });
    if ending.by_server {
        tokio::select! {
            _ = tokio::time::timeout(shared.limits.linger, drain(&mut stream)) => {}
            _ = stopped(&mut shutdown) => {}
        }
    }
}

/// Sends FIN (after TLS close_notify, over TLS), then reads and discards until the client
/// closes too.
async fn drain(stream: &mut Stream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Writes everything in `out`, trickling the slow runs.
async fn write_out(stream: &mut Stream, out: &mut Output, timeout: Duration) -> Result<(), Ending> {
    let bounded = |result: Result<io::Result<()>, tokio::time::error::Elapsed>| match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ending::now(format!("i/o error: {e}"))),
        Err(_) => Err(Ending::now("timeout (client not reading)")),
    };
    for (pace, bytes) in out.runs.drain(..) {
        match pace {
            None => {
                bounded(tokio::time::timeout(timeout, stream.write_all(&bytes)).await)?;
            }
            Some(rate) => {
                // About ten writes a second; each piece waits its share of time first, so the
                // whole reply takes at least len / rate.
                let rate = rate.max(1) as usize;
                let piece = (rate / 10).max(1);
                for chunk in bytes.chunks(piece) {
                    tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64))
                        .await;
                    bounded(tokio::time::timeout(timeout, stream.write_all(chunk)).await)?;
                    bounded(tokio::time::timeout(timeout, stream.flush()).await)?;
                }
            }
        }
    }
    bounded(tokio::time::timeout(timeout, stream.flush()).await)
}

/// The SMTP conversation proper.
async fn converse(
    stream: &mut Stream,
    client: SocketAddr,
    id: SessionId,
    shared: &Shared,
) -> Ending {
    let limits = shared.limits.clone();
    let mut effects = Vec::new();
    let mut out = Output::default();
    let mut tls: Option<String> = None;
    let mut gate = Gate::open(
        &shared.behaviour.policies,
        client.ip(),
        &shared.hostname,
        &shared.policy.state,
    );
    if let Some(gate) = &mut gate {
        gate.connect();
        if let Some(lookup) = gate.greeting_lookup() {
            gate.store(shared.policy.resolve(lookup).await);
        }
    }
    let ordinal = shared
        .sessions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let behaviour = if shared.behaviour.has_timed_rules() {
        Arc::new(
            shared
                .behaviour
                .for_session(ordinal, shared.policy.clock.elapsed()),
        )
    } else {
        shared.behaviour.clone()
    };
    let mut session = Session::start_gated(
        id,
        &shared.hostname,
        behaviour,
        limits.clone(),
        gate,
        &mut effects,
    );
    let mut next = apply(shared, id, client, &tls, &mut effects, &mut out);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !out.is_empty() {
            if let Err(ending) = write_out(stream, &mut out, limits.idle_timeout).await {
                return ending;
            }
        }
        match next {
            Next::Read => {}
            Next::Close(reason) => {
                return Ending {
                    reason,
                    by_server: true,
                }
            }
            Next::Reset(reason) => return abort(stream, reason),
            Next::StartTls => match start_tls(stream, id, shared, session.tls_started()).await {
                Ok(detail) => tls = Some(detail),
                Err(ending) => return ending,
            },
        }
        let read = tokio::time::timeout(limits.idle_timeout, stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) if session.in_data() => return Ending::now("client closed during DATA"),
            Ok(Ok(0)) => return Ending::now("client closed"),
            Ok(Ok(n)) => session.input(&buf[..n], &mut effects),
            Ok(Err(e)) => return Ending::now(format!("i/o error: {e}")),
            Err(_) => session.timeout(&mut effects),
        }
        next = apply(shared, id, client, &tls, &mut effects, &mut out);
        // A policy waiting for DNS: look it up, then let the session go on.
        while let Some(lookup) = session.pending_lookup() {
            let answer = shared.policy.resolve(lookup).await;
            session.resume(answer, &mut effects);
            next = apply(shared, id, client, &tls, &mut effects, &mut out);
        }
        debug_assert_eq!(
            matches!(next, Next::Close(_) | Next::Reset(_)),
            session.is_closed()
        );
    }
}

/// Authenticates an accepted message in the background (SPF, DKIM, DMARC against the scenario
/// DNS) and records a `MessageAuth` event; the reply to the client does not wait for it.
fn authenticate(shared: &Shared, id: SessionId, client: SocketAddr, message: &Accepted) {
    let lookup = Lookup::Auth {
        ip: client.ip(),
        helo: message.helo.clone(),
        sender: message.from.clone(),
        host: shared.hostname.clone(),
        message: Arc::new(message.content.clone()),
    };
    let (policy, log, host) = (
        shared.policy.clone(),
        shared.log.clone(),
        shared.host.clone(),
    );
    let message_id = message.message_id.clone();
    tokio::spawn(async move {
        let results = match policy.resolve(lookup).await {
            Answer::Auth(results) => results,
            _ => AuthResults::temp_error("unexpected answer"),
        };
        log.record(EventKind::MessageAuth {
            host,
            session: id,
            message_id,
            spf: results.spf,
            dkim: results.dkim,
            dmarc: results.dmarc,
        });
    });
}

/// Ends the conversation with a TCP reset: `SO_LINGER` 0, so dropping the socket sends RST
/// instead of FIN and discards whatever is unsent or unread.
fn abort(stream: &Stream, reason: String) -> Ending {
    let tcp = match stream {
        Stream::Plain(tcp) => Some(tcp),
        Stream::Tls(tls) => Some(tls.get_ref().0),
        Stream::Gone => None,
    };
    let reason = match tcp.map(TcpStream::set_zero_linger) {
        Some(Err(e)) => format!("{reason} (no reset: setting SO_LINGER failed: {e})"),
        _ => reason,
    };
    Ending::now(reason)
}

/// Runs the server side of the TLS handshake after STARTTLS's `220` went out, and records
/// `SmtpTls` (noting the `discarded` plain-text bytes the client sent after STARTTLS, if any).
/// Returns the protocol and cipher suite, or how the session ends.
async fn start_tls(
    stream: &mut Stream,
    id: SessionId,
    shared: &Shared,
    discarded: usize,
) -> Result<String, Ending> {
    let record = |detail: String| {
        shared.log.record(EventKind::SmtpTls {
            host: shared.host.clone(),
            session: id,
            detail,
        })
    };
    let timeout = shared.limits.idle_timeout;
    let Stream::Plain(tcp) = std::mem::replace(stream, Stream::Gone) else {
        record("handshake failed: STARTTLS over TLS".into());
        return Err(Ending::now("tls handshake failed: already TLS"));
    };
    let config = match (&shared.tls, shared.behaviour.tls) {
        (Some(config), _) => config.clone(),
        (None, TlsMode::BrokenHandshake) => {
            // Take the ClientHello (if it comes), answer with garbage, close.
            *stream = Stream::Plain(tcp);
            let mut hello = [0u8; 16 * 1024];
            let _ = tokio::time::timeout(timeout, stream.read(&mut hello)).await;
            let _ = tokio::time::timeout(timeout, stream.write_all(NOT_TLS)).await;
            record(
                "handshake failed: broken on purpose (answered with bytes that are not TLS)".into(),
            );
            return Err(Ending {
                reason: "tls handshake broken on purpose".into(),
                by_server: true,
            });
        }
        (None, TlsMode::StalledHandshake) => {
            // Take the ClientHello and whatever follows, never answer, until the client gives
            // up (or the idle timeout passes).
            *stream = Stream::Plain(tcp);
            let mut sink = [0u8; 16 * 1024];
            let mut got = 0;
            let ended = loop {
                match tokio::time::timeout(timeout, stream.read(&mut sink)).await {
                    Ok(Ok(0)) => break "client closed",
                    Ok(Ok(n)) => got += n,
                    Ok(Err(_)) => break "client reset",
                    Err(_) => break "idle timeout",
                }
            };
            record(format!(
                "handshake stalled on purpose ({got} bytes of handshake read, never answered; {ended})"
            ));
            return Err(Ending::now(format!(
                "tls handshake stalled on purpose ({ended})"
            )));
        }
        (None, TlsMode::Alert) => {
            // Take the ClientHello, answer with a fatal handshake_failure alert, close.
            *stream = Stream::Plain(tcp);
            let mut hello = [0u8; 16 * 1024];
            let _ = tokio::time::timeout(timeout, stream.read(&mut hello)).await;
            let _ = tokio::time::timeout(timeout, stream.write_all(HANDSHAKE_FAILURE)).await;
            record("handshake failed: fatal alert handshake_failure sent on purpose".into());
            return Err(Ending {
                reason: "tls alert sent on purpose".into(),
                by_server: true,
            });
        }
        (None, _) => {
            // Not reachable: STARTTLS is only accepted with a configuration or a broken mode.
            record("handshake failed: no TLS configuration".into());
            return Err(Ending::now("tls handshake failed: no TLS configuration"));
        }
    };
    let accept = TlsAcceptor::from(config).accept(tcp);
    match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(tls)) => {
            let (_, connection) = tls.get_ref();
            let version = match connection.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                Some(other) => format!("{other:?}"),
                None => "TLS?".to_string(),
            };
            let suite = connection
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_else(|| "unknown-suite".to_string());
            let detail = format!("{version} {suite}");
            if discarded > 0 {
                record(format!(
                    "{detail} ({discarded} bytes sent after STARTTLS discarded)"
                ));
            } else {
                record(detail.clone());
            }
            *stream = Stream::Tls(Box::new(tls));
            Ok(detail)
        }
        Ok(Err(e)) => {
            record(format!("handshake failed: {e}"));
            Err(Ending::now(format!("tls handshake failed: {e}")))
        }
        Err(_) => {
            record("handshake failed: timeout".into());
            Err(Ending::now("tls handshake failed: timeout"))
        }
    }
}

/// Records a reply and queues its bytes.
fn send(shared: &Shared, id: SessionId, reply: &Reply, out: &mut Vec<u8>) {
    shared.log.record(EventKind::SmtpReply {
        host: shared.host.clone(),
        session: id,
        reply: reply.log_text(),
    });
    reply.write_to(out);
}

/// What the conversation does after the pending output is written.
enum Next {
    /// Read more input.
    Read,
    /// Run the TLS handshake, then read.
    StartTls,
    /// Close, for this reason.
    Close(String),
    /// Abort with a TCP reset, for this reason.
    Reset(String),
}

/// Records and carries out effects: replies are appended to `out`, messages stored. Returns
/// what to do once `out` is written.
fn apply(
    shared: &Shared,
    id: SessionId,
    client: SocketAddr,
    tls: &Option<String>,
    effects: &mut Vec<Effect>,
    out: &mut Output,
) -> Next {
    let mut next = Next::Read;
    for effect in effects.drain(..) {
        match effect {
            Effect::Command(line) => shared.log.record(EventKind::SmtpCommand {
                host: shared.host.clone(),
                session: id,
                line,
            }),
            Effect::Reply(reply) => send(shared, id, &reply, out.at(None)),
            Effect::Trickle(reply, rate) => send(shared, id, &reply, out.at(Some(rate))),
            Effect::Accepted(message) => {
                let message_size = message.content.len();
                tracing::debug!(
                    host = %shared.host,
                    session = id,
                    queue_id = %message.queue_id,
                    "message accepted"
                );
                // Stored before the event, so whoever waits for the event finds the message.
                shared.store(StoredMessage {
                    session: id,
                    family: shared.family,
                    from: message.from.clone(),
                    to: message.to.clone(),
                    content: message.content.clone(),
                    digest: message.digest.clone(),
                    tls: tls.clone(),
                });
                if shared.policy.authenticate {
                    authenticate(shared, id, client, &message);
                }
                shared.log.record(EventKind::MessageAccepted {
                    host: shared.host.clone(),
                    session: id,
                    family: shared.family,
                    from: message.from,
                    to: message.to,
                    size: message_size,
                    digest: message.digest,
                    message_id: message.message_id,
                });
            }
            Effect::Policy(detail) => shared.log.record(EventKind::Policy {
                host: shared.host.clone(),
                session: id,
                detail,
            }),
            Effect::StartTls => next = Next::StartTls,
            Effect::Close(reason) => next = Next::Close(reason),
            Effect::Reset(reason) => next = Next::Reset(reason),
        }
    }
    next
}
