//! One connection: drives a [`Session`] over a TCP stream and records what happens.
//!
//! Replies produced by one read are written together (RFC 2920 lets a server batch replies to
//! pipelined commands) and before the next read, so the client always gets every reply in order.
//! Every await is bounded: reads and writes by the idle timeout, the final drain by the linger
//! time, and all of it by the server's shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::session::{Effect, Session};
use super::{stopped, Shared, StoredMessage};
use crate::events::{EventKind, SessionId};

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

/// Serves one accepted connection until it ends, then records `SmtpClosed`.
pub(crate) async fn serve(
    mut stream: TcpStream,
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

    let ending = tokio::select! {
        ending = converse(&mut stream, id, &shared) => ending,
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

/// Sends FIN, then reads and discards until the client closes too.
async fn drain(stream: &mut TcpStream) {
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

/// The SMTP conversation proper.
async fn converse(stream: &mut TcpStream, id: SessionId, shared: &Shared) -> Ending {
    let limits = shared.limits.clone();
    let mut effects = Vec::new();
    let mut out = Vec::new();
    let mut session = Session::start(
        id,
        &shared.hostname,
        &shared.behaviour.greeting,
        limits.clone(),
        &mut effects,
    );
    let mut closing = apply(shared, id, &mut effects, &mut out);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !out.is_empty() {
            let write = tokio::time::timeout(limits.idle_timeout, stream.write_all(&out)).await;
            match write {
                Ok(Ok(())) => out.clear(),
                Ok(Err(e)) => return Ending::now(format!("i/o error: {e}")),
                Err(_) => return Ending::now("timeout (client not reading)"),
            }
        }
        if let Some(reason) = closing {
            return Ending {
                reason,
                by_server: true,
            };
        }
        let read = tokio::time::timeout(limits.idle_timeout, stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) if session.in_data() => return Ending::now("client closed during DATA"),
            Ok(Ok(0)) => return Ending::now("client closed"),
            Ok(Ok(n)) => session.input(&buf[..n], &mut effects),
            Ok(Err(e)) => return Ending::now(format!("i/o error: {e}")),
            Err(_) => session.timeout(&mut effects),
        }
        closing = apply(shared, id, &mut effects, &mut out);
        debug_assert_eq!(closing.is_some(), session.is_closed());
    }
}

/// Records and carries out effects: replies are appended to `out`, messages stored. Returns
/// the close reason if the session decided to close.
fn apply(
    shared: &Shared,
    id: SessionId,
    effects: &mut Vec<Effect>,
    out: &mut Vec<u8>,
) -> Option<String> {
    let mut closing = None;
    for effect in effects.drain(..) {
        match effect {
            Effect::Command(line) => shared.log.record(EventKind::SmtpCommand {
                host: shared.host.clone(),
                session: id,
                line,
            }),
            Effect::Reply(reply) => {
                shared.log.record(EventKind::SmtpReply {
                    host: shared.host.clone(),
                    session: id,
                    reply: reply.log_text(),
                });
                reply.write_to(out);
            }
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
                    content: message.content,
                    digest: message.digest.clone(),
                });
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
            Effect::Close(reason) => closing = Some(reason),
        }
    }
    closing
}
