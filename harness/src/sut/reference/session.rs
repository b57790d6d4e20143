//! One SMTP client session to one address of an MX host (RFC 5321 §3, §4.5.3.2 timeouts).

use std::net::SocketAddr;
use std::time::Duration;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use super::netio::{seconds, NetIo};
use super::Logger;
use crate::bugs::{Bug, Bugs};
use crate::family::Family;
use crate::sut::smtp::{data_payload, read_reply, Reply};

/// Message content is written in pieces of this size, each within the reply timeout.
const WRITE_CHUNK: usize = 16 * 1024;
/// How long QUIT may take; nothing depends on it.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a session is to carry.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `MAIL FROM`, empty for the null sender.
    pub from: &'a str,
    /// `RCPT TO`, all in one domain.
    pub recipients: &'a [String],
    /// The message, not dot-stuffed.
    pub content: &'a [u8],
}

/// How to run sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig<'a> {
    /// Sockets.
    pub net: NetIo,
    /// The name given in EHLO/HELO.
    pub helo: &'a str,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of every reply and of every write of content.
    pub reply_timeout: Duration,
    /// Planted bugs.
    pub bugs: Bugs,
    /// The source addresses to bind to (`[route] bind`), at most one per family.
    pub bind: &'a [std::net::IpAddr],
    /// STARTTLS when the server offers it, verifying its certificate with this configuration
    /// (RFC 3207); `None`: clear text only.
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
}

/// A TLS client configuration trusting only the certificates in the PEM file at `ca_file`.
pub fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The connection of a session: plain TCP, or TLS after STARTTLS.
pub enum Conn {
    /// Before STARTTLS (or without it).
    Plain(TcpStream),
    /// After a successful handshake.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Lost in a failed handshake: reads see EOF, writes fail.
    Gone,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A stream a session can run STARTTLS on.
pub trait StartTls: AsyncRead + AsyncWrite + Unpin {
    /// Runs the client handshake for `name` with `config`, within `timeout`; the stream is
    /// unusable after a failure.
    fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<String, String>>;
}

impl StartTls for Conn {
    async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        timeout: Duration,
    ) -> Result<String, String> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err("STARTTLS on a connection that is not plain TCP".into());
        };
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => {
                let (_, connection) = tls.get_ref();
                let detail = format!(
                    "{:?} {:?}",
                    connection.protocol_version(),
                    connection.negotiated_cipher_suite().map(|s| s.suite())
                );
                *self = Conn::Tls(Box::new(tls));
                Ok(detail)
            }
            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
            Err(_) => Err(format!("no TLS handshake within {}", seconds(timeout))),
        }
    }
}

/// A permanent or temporary failure the MX host reported or caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The MX host's name.
    pub host: String,
    /// `host[address]`, for messages.
    pub peer: String,
    /// The reply (lines joined with spaces), or what went wrong on the connection.
    pub reply: String,
    /// Whether `reply` is an SMTP reply from the MX (and not a local error).
    pub from_remote: bool,
    /// The step, e.g. `RCPT TO:<bob@example.test>` or `the greeting`.
    pub stage: String,
}

impl Failure {
    /// `host mx1.example.test[192.0.2.26] said: 550 5.1.1 no (in reply to RCPT TO:<bob@x>)`.
    pub fn describe(&self) -> String {
        if self.from_remote {
            format!(
                "host {} said: {} (in reply to {})",
                self.peer, self.reply, self.stage
            )
        } else {
            format!("{}: {} ({})", self.peer, self.reply, self.stage)
        }
    }
}

/// What happened to one recipient in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The MX accepted the message for it (the final reply).
    Delivered(String),
    /// A temporary failure: keep it queued and retry later.
    Deferred(Failure),
    /// A permanent failure: bounce.
    Bounced(Failure),
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Recipients the session settled for this delivery attempt.
    pub settled: Vec<(String, RcptResult)>,
    /// Why the other recipients should go to the next address, if any are left.
    pub try_next: Option<Failure>,
}

/// A step failed before the recipients were settled.
#[derive(Debug)]
enum Stop {
    /// Move on to the next address (connection trouble, 4xx/5xx greeting, 4xx EHLO or MAIL).
    NextAddress(Failure),
    /// Every unsettled recipient gets this result.
    All(RcptResult),
}

/// Whether an EHLO reply advertises STARTTLS.
fn offers_starttls(ehlo: &Reply) -> bool {
    ehlo.text.lines().any(|line| {
        line.get(4..)
            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
    })
}

/// The server's reply, lines joined with spaces.
fn flat(reply: &Reply) -> String {
    reply.text.replace('\n', " ")
}

/// Runs one session with `host` at `address` for `envelope`; logs each step to `log`.
pub async fn deliver(
    config: &SessionConfig<'_>,
    host: &str,
    address: SocketAddr,
    envelope: Envelope<'_>,
    log: &Logger,
) -> SessionOutcome {
    let peer = format!("{host}[{}]", address.ip());
    log.line(format!("connecting to {peer}:{}", address.port()));
    let local = |reply: String, stage: &str| Failure {
        host: host.to_string(),
        peer: peer.clone(),
        reply,
        from_remote: false,
        stage: stage.to_string(),
    };
    let source = config
        .bind
        .iter()
        .copied()
        .find(|source| Family::of(*source) == Family::of(address.ip()));
    let stream = match config
        .net
        .connect(address, source, config.connect_timeout)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            let failure = local(format!("connect failed: {e}"), "connect");
            log.line(failure.describe());
            return SessionOutcome {
                settled: Vec::new(),
                try_next: Some(failure),
            };
        }
    };
    if let Ok(local_address) = stream.local_addr() {
        log.line(format!("connected to {peer} from {local_address}"));
    }
    let mut session = Session {
        stream: BufReader::new(Conn::Plain(stream)),
        config,
        host,
        peer: &peer,
        log,
        broken: false,
        ipv6: address.is_ipv6(),
    };
    let mut settled = Vec::new();
    let stop = session.transaction(envelope, &mut settled).await;
    if !session.broken {
        session.quit().await;
    }
    let try_next = match stop {
        Ok(()) => None,
        Err(Stop::NextAddress(failure)) => {
            log.line(format!("{}; trying the next address", failure.describe()));
            Some(failure)
        }
        Err(Stop::All(result)) => {
            for rcpt in envelope.recipients {
                if !settled.iter().any(|(r, _)| r == rcpt) {
                    settled.push((rcpt.clone(), result.clone()));
                }
            }
            None
        }
    };
    SessionOutcome { settled, try_next }
}

struct Session<'a, S> {
    stream: BufReader<S>,
    config: &'a SessionConfig<'a>,
    host: &'a str,
    peer: &'a str,
    log: &'a Logger,
    /// The connection failed or timed out: no QUIT.
    broken: bool,
    /// The session runs over IPv6.
    ipv6: bool,
}

impl<S: StartTls> Session<'_, S> {
    fn failure(&self, reply: String, from_remote: bool, stage: &str) -> Failure {
        Failure {
            host: self.host.to_string(),
            peer: self.peer.to_string(),
            reply,
            from_remote,
            stage: stage.to_string(),
        }
    }

    /// Reads one reply within the reply timeout; trouble means the next address.
    async fn reply(&mut self, stage: &str) -> Result<Reply, Stop> {
        let timeout = self.config.reply_timeout;
        let reply = match tokio::time::timeout(timeout, read_reply(&mut self.stream)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                self.broken = true;
                return Err(Stop::NextAddress(self.failure(e, false, stage)));
            }
            Err(_) => {
                self.broken = true;
                return Err(Stop::NextAddress(self.failure(
                    format!("no reply within {}", seconds(timeout)),
                    false,
                    stage,
                )));
            }
        };
        self.log
            .line(format!("{}: {} ({stage})", self.peer, flat(&reply)));
        Ok(reply)
    }

    async fn write(&mut self, bytes: &[u8], stage: &str) -> Result<(), Stop> {
        let timeout = self.config.reply_timeout;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            match tokio::time::timeout(timeout, self.stream.get_mut().write_all(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(Stop::NextAddress(self.failure(
                        format!("write failed: {e}"),
                        false,
                        stage,
                    )));
                }
                Err(_) => {
                    self.broken = true;
                    return Err(Stop::NextAddress(self.failure(
                        format!("write stalled for {}", seconds(timeout)),
                        false,
                        stage,
                    )));
                }
            }
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Reply, Stop> {
        self.write(format!("{line}\r\n").as_bytes(), line).await?;
        self.reply(line).await
    }

    /// A 4xx that is treated as 5xx under the `4xx-as-5xx` bug.
    fn permanent(&self, reply: &Reply) -> bool {
        reply.code >= 500 || (self.config.bugs.has(Bug::TempfailAsPermanent) && reply.code >= 400)
    }

    /// A 5xx policy refusal (enhanced code 5.7.x, e.g. Gmail's 5.7.25 "no PTR") over IPv6:
    /// worth trying over IPv4 before bouncing (draft-martin-smtp-ipv6-to-ipv4-fallback).
    fn ipv6_policy_refusal(&self, reply: &Reply) -> bool {
        self.ipv6 && reply.code >= 500 && reply.text.get(4..8) == Some("5.7.")
    }

    /// A recipient refusal that sends the recipient on to the next address instead of
    /// settling it: a 4xx (RFC 5321 §5.1: try the remaining addresses), or an IPv6 policy
    /// refusal; not under the `4xx-as-5xx` bug.
    fn moves_on(&self, reply: &Reply) -> bool {
        !self.config.bugs.has(Bug::TempfailAsPermanent)
            && ((400..500).contains(&reply.code) || self.ipv6_policy_refusal(reply))
    }

    /// A negative reply before any recipient: bounce everything if permanent (for `MAIL`,
    /// or anything under the `4xx-as-5xx` bug), else the next address.
    fn refused(&self, reply: &Reply, stage: &str, bounce_on_5xx: bool) -> Stop {
        let failure = self.failure(flat(reply), true, stage);
        let bug = self.config.bugs.has(Bug::TempfailAsPermanent) && reply.code < 500;
        if bug || (bounce_on_5xx && reply.code >= 500 && !self.ipv6_policy_refusal(reply)) {
            Stop::All(RcptResult::Bounced(failure))
        } else {
            Stop::NextAddress(failure)
        }
    }

    async fn transaction(
        &mut self,
        envelope: Envelope<'_>,
        settled: &mut Vec<(String, RcptResult)>,
    ) -> Result<(), Stop> {
        let greeting = self.reply("the greeting").await?;
        if !(200..300).contains(&greeting.code) {
            // A 5xx greeting is the host's problem, not the message's: next address
            // (like Postfix's smtp_skip_5xx_greeting).
            return Err(self.refused(&greeting, "the greeting", false));
        }
        let ehlo = self.command(&format!("EHLO {}", self.config.helo)).await?;
        if ehlo.code >= 500 {
            let helo = self.command(&format!("HELO {}", self.config.helo)).await?;
            if !(200..300).contains(&helo.code) {
                return Err(self.refused(&helo, "HELO", false));
            }
        } else if !(200..300).contains(&ehlo.code) {
            return Err(self.refused(&ehlo, "EHLO", false));
        } else if let Some(tls) = self.config.tls.filter(|_| offers_starttls(&ehlo)) {
            // Opportunistic STARTTLS (RFC 3207), verifying the certificate; a failed
            // handshake leaves the connection unusable: next address.
            let reply = self.command("STARTTLS").await?;
            if reply.code == 220 {
                let name = rustls::pki_types::ServerName::try_from(self.host.to_string()).map_err(
                    |e| Stop::NextAddress(self.failure(e.to_string(), false, "STARTTLS")),
                )?;
                let timeout = self.config.reply_timeout;
                match self
                    .stream
                    .get_mut()
                    .start_tls(tls.clone(), name, timeout)
                    .await
                {
                    Ok(detail) => self
                        .log
                        .line(format!("{}: TLS started ({detail})", self.peer)),
                    Err(e) => {
                        self.broken = true;
                        return Err(Stop::NextAddress(self.failure(e, false, "STARTTLS")));
                    }
                }
                let again = self.command(&format!("EHLO {}", self.config.helo)).await?;
                if !(200..300).contains(&again.code) {
                    return Err(self.refused(&again, "EHLO", false));
                }
            }
        }
        let mail = format!("MAIL FROM:<{}>", envelope.from);
        let reply = self.command(&mail).await?;
        if !(200..300).contains(&reply.code) {
            return Err(self.refused(&reply, &mail, true));
        }
        let mut accepted = Vec::new();
        // Recipients refused for now go on to the next address, for this reason.
        let mut moved_on: Option<Failure> = None;
        for rcpt in envelope.recipients {
            let line = format!("RCPT TO:<{rcpt}>");
            let reply = self.command(&line).await?;
            if (200..300).contains(&reply.code) {
                accepted.push(rcpt.clone());
                continue;
            }
            let failure = self.failure(flat(&reply), true, &line);
            if self.moves_on(&reply) {
                moved_on.get_or_insert(failure);
                continue;
            }
            let result = if self.permanent(&reply) {
                RcptResult::Bounced(failure)
            } else {
                RcptResult::Deferred(failure)
            };
            settled.push((rcpt.clone(), result));
        }
        let next_address =
            |moved_on: Option<Failure>| moved_on.map_or(Ok(()), |f| Err(Stop::NextAddress(f)));
        if accepted.is_empty() {
            return next_address(moved_on);
        }
        let mut settle_accepted = |result: RcptResult| {
            for rcpt in &accepted {
                settled.push((rcpt.clone(), result.clone()));
            }
        };
        let data = self.command("DATA").await?;
        if data.code != 354 {
            let failure = self.failure(flat(&data), true, "DATA");
            settle_accepted(if self.permanent(&data) {
                RcptResult::Bounced(failure)
            } else {
                RcptResult::Deferred(failure)
            });
            return next_address(moved_on);
        }
        self.write(&data_payload(envelope.content), "the message content")
            .await?;
        let done = self.reply("end of DATA").await?;
        let failure = self.failure(flat(&done), true, "end of DATA");
        settle_accepted(if (200..300).contains(&done.code) {
            RcptResult::Delivered(flat(&done))
        } else if self.permanent(&done) {
            RcptResult::Bounced(failure)
        } else {
            RcptResult::Deferred(failure)
        });
        next_address(moved_on)
    }

    /// Says QUIT and waits briefly for the reply; failures change nothing.
    async fn quit(&mut self) {
        let quit = async {
            self.stream.get_mut().write_all(b"QUIT\r\n").await.ok()?;
            read_reply(&mut self.stream).await.ok()
        };
        let _ = tokio::time::timeout(QUIT_TIMEOUT, quit).await;
        let _ = self.stream.get_mut().shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, EventLog};
    use crate::sut::reference::netio::NetnsId;
    use tokio::io::AsyncReadExt;

    impl StartTls for tokio::io::DuplexStream {
        async fn start_tls(
            &mut self,
            _: Arc<rustls::ClientConfig>,
            _: rustls::pki_types::ServerName<'static>,
            _: Duration,
        ) -> Result<String, String> {
            Err("no TLS on an in-memory test stream".into())
        }
    }

    #[test]
    fn starttls_is_found_in_the_ehlo_reply() {
        let reply = |text: &str| Reply {
            code: 250,
            text: text.into(),
        };
        assert!(offers_starttls(&reply(
            "250-mx1\n250-STARTTLS\n250 SMTPUTF8"
        )));
        assert!(offers_starttls(&reply("250-mx1\n250 starttls")));
        assert!(!offers_starttls(&reply(
            "250-mx1\n250-X-STARTTLS-NOT\n250 SIZE"
        )));
    }

    /// Runs a transaction against a scripted server that sends `replies` one by one, each
    /// after reading one chunk from the client (after the greeting). Returns what was
    /// settled, how the transaction stopped, and what the client sent.
    async fn scripted(
        replies: &'static [&'static str],
        recipients: &[&str],
        bugs: Bugs,
    ) -> (Vec<(String, RcptResult)>, Option<Stop>, String) {
        let (client, mut server) = tokio::io::duplex(256 * 1024);
        let server_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (i, reply) in replies.iter().enumerate() {
                if i > 0 {
                    let mut buf = [0u8; 65536];
                    let n = server.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                server.write_all(reply.as_bytes()).await.unwrap();
            }
            drop(server);
            String::from_utf8(seen).unwrap()
        });
        let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
        let config = SessionConfig {
            net: NetIo::new(NetnsId::of_current_thread().unwrap()),
            helo: "sut.sender.test",
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(2),
            bugs,
            bind: &[],
            tls: None,
        };
        let log = Logger::new(EventLog::new(), "1: ".into());
        let mut session = Session {
            stream: BufReader::new(client),
            config: &config,
            host: "mx1.example.test",
            peer: "mx1.example.test[192.0.2.26]",
            log: &log,
            broken: false,
            ipv6: false,
        };
        let mut settled = Vec::new();
        let envelope = Envelope {
            from: "alice@sender.test",
            recipients: &recipients,
            content: b"Subject: x\r\n\r\n.hi\r\n",
        };
        let stop = session.transaction(envelope, &mut settled).await.err();
        drop(session);
        (settled, stop, server_task.await.unwrap())
    }

    fn kinds(settled: &[(String, RcptResult)]) -> Vec<String> {
        settled
            .iter()
            .map(|(rcpt, result)| match result {
                RcptResult::Delivered(_) => format!("{rcpt} delivered"),
                RcptResult::Deferred(f) => format!("{rcpt} deferred {}", f.reply),
                RcptResult::Bounced(f) => format!("{rcpt} bounced {}", f.reply),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_full_transaction_with_dot_stuffing() {
        let (settled, stop, seen) = scripted(
            &[
                "220 mx1 ESMTP\r\n",
                "250-mx1\r\n250 8BITMIME\r\n",
                "250 ok\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "250 2.0.0 queued\r\n",
            ],
            &["bob@example.test"],
            Bugs::NONE,
        )
        .await;
        assert!(stop.is_none());
        assert_eq!(kinds(&settled), ["bob@example.test delivered"]);
        assert_eq!(
            seen,
            "EHLO sut.sender.test\r\nMAIL FROM:<alice@sender.test>\r\n\
             RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\n"
        );
    }

    #[tokio::test]
    async fn a_4xx_greeting_moves_on_unless_4xx_is_taken_for_5xx() {
        let (settled, stop, _) =
            scripted(&["421 4.3.2 busy\r\n"], &["bob@example.test"], Bugs::NONE).await;
        assert!(settled.is_empty());
        assert!(matches!(stop, Some(Stop::NextAddress(f)) if f.reply == "421 4.3.2 busy"));
        let (_, stop, _) = scripted(
            &["421 4.3.2 busy\r\n"],
            &["bob@example.test"],
            Bugs::only(Bug::TempfailAsPermanent),
        )
        .await;
        assert!(matches!(stop, Some(Stop::All(RcptResult::Bounced(_)))));
    }

    #[tokio::test]
    async fn a_5xx_greeting_moves_on_and_a_5xx_ehlo_falls_back_to_helo() {
        let (_, stop, _) = scripted(&["554 go away\r\n"], &["b@x"], Bugs::NONE).await;
        assert!(matches!(stop, Some(Stop::NextAddress(_))));
        let (settled, stop, seen) = scripted(
            &[
                "220 hi\r\n",
                "502 no EHLO\r\n",
                "250 hello\r\n",
                "250 ok\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "250 ok\r\n",
            ],
            &["b@x"],
            Bugs::NONE,
        )
        .await;
        assert!(stop.is_none());
        assert_eq!(kinds(&settled), ["b@x delivered"]);
        assert!(seen.starts_with("EHLO sut.sender.test\r\nHELO sut.sender.test\r\n"));
    }

    #[tokio::test]
    async fn mail_rcpt_and_data_replies_settle_recipients() {
        // 5xx MAIL bounces everyone; 4xx MAIL moves on.
        let (_, stop, _) = scripted(
            &["220 hi\r\n", "250 hi\r\n", "550 5.7.1 sender refused\r\n"],
            &["b@x"],
            Bugs::NONE,
        )
        .await;
        assert!(matches!(stop, Some(Stop::All(RcptResult::Bounced(_)))));
        let (_, stop, _) = scripted(
            &["220 hi\r\n", "250 hi\r\n", "451 4.3.0 later\r\n"],
            &["b@x"],
            Bugs::NONE,
        )
        .await;
        assert!(matches!(stop, Some(Stop::NextAddress(_))));
        // Per-recipient replies; then DATA for the accepted one.
        let (settled, stop, _) = scripted(
            &[
                "220 hi\r\n",
                "250 hi\r\n",
                "250 ok\r\n",
                "550 5.1.1 no such user\r\n",
                "450 4.2.1 try later\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "452 4.3.1 full\r\n",
            ],
            &["a@x", "b@x", "c@x"],
            Bugs::NONE,
        )
        .await;
        // The 450 recipient goes on to the next address; the others are settled here.
        assert!(
            matches!(&stop, Some(Stop::NextAddress(f)) if f.reply == "450 4.2.1 try later"),
            "{stop:?}"
        );
        assert_eq!(
            kinds(&settled),
            [
                "a@x bounced 550 5.1.1 no such user",
                "c@x deferred 452 4.3.1 full"
            ]
        );
    }

    #[tokio::test]
    async fn a_connection_lost_mid_session_moves_on() {
        let (settled, stop, _) =
            scripted(&["220 hi\r\n", "250 hi\r\n"], &["b@x"], Bugs::NONE).await;
        assert!(settled.is_empty());
        assert!(
            matches!(&stop, Some(Stop::NextAddress(f)) if !f.from_remote && f.stage.starts_with("MAIL"))
        );
    }

    #[test]
    fn failures_describe_themselves() {
        let failure = Failure {
            host: "mx1".into(),
            peer: "mx1[192.0.2.26]".into(),
            reply: "550 5.1.1 no".into(),
            from_remote: true,
            stage: "RCPT TO:<b@x>".into(),
        };
        assert_eq!(
            failure.describe(),
            "host mx1[192.0.2.26] said: 550 5.1.1 no (in reply to RCPT TO:<b@x>)"
        );
        let _ = EventKind::SutLog {
            line: String::new(),
        };
    }
}
