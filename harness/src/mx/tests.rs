//! The server over real TCP on loopback (127.0.0.1 and [::1]); no mocks.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::events::{Event, EventKind};

const WAIT: Duration = Duration::from_secs(5);

fn listener(addr: &str, family: Family, greeting: Option<&str>) -> (Listener, SocketAddr) {
    let socket = std::net::TcpListener::bind(addr).expect("bind loopback");
    let local = socket.local_addr().unwrap();
    let behaviour = match greeting {
        Some(greeting) => ListenerBehaviour {
            greeting: greeting.to_string(),
            ..ListenerBehaviour::normal("mx1.example.test")
        },
        None => ListenerBehaviour::normal("mx1.example.test"),
    };
    let listener = Listener {
        socket,
        family,
        behaviour,
    };
    (listener, local)
}

/// One IPv4 listener with the normal greeting.
fn server(limits: Limits) -> (RunningMx, SocketAddr, EventLog) {
    let log = EventLog::new();
    let (l, addr) = listener("127.0.0.1:0", Family::Ipv4, None);
    let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listener(l)
        .limits(limits)
        .try_start()
        .unwrap();
    (mx, addr, log)
}

struct Client<S = TcpStream> {
    stream: BufReader<S>,
}

impl Client<TcpStream> {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// The client side of STARTTLS (after the server's 220), verifying the server as `name`.
    async fn tls(
        self,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> std::io::Result<Client<tokio_rustls::client::TlsStream<TcpStream>>> {
        assert!(
            self.stream.buffer().is_empty(),
            "server sent more after 220"
        );
        let tcp = self.stream.into_inner();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let stream = tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .expect("handshake timed out")?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// Reads one (possibly multi-line) reply; lines joined with `\n`, without CRLF.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
                .await
                .expect("reply timed out")
                .unwrap();
            assert!(n > 0, "connection closed; got so far: {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n").to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// Reads `n` replies and returns their codes.
    async fn codes(&mut self, n: usize) -> Vec<u16> {
        let mut codes = Vec::new();
        for _ in 0..n {
            codes.push(self.reply().await[..3].parse().unwrap());
        }
        codes
    }

    /// Asserts the server closes the connection without sending more.
    async fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("server did not close")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), "");
    }
}

fn closed_reasons(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SmtpClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

async fn wait_closed(log: &EventLog, n: usize) -> Vec<String> {
    log.wait_until(WAIT, |events| closed_reasons(events).len() >= n)
        .await;
    closed_reasons(&log.snapshot())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const ENVELOPE: &[u8] =
    b"EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n";
const STUFFED: &[u8] =
    b"Message-ID: <m1@sender.test>\r\nSubject: dots\r\n\r\n..leading dot\r\n...\r\nend\r\n.\r\n";
const UNSTUFFED: &[u8] =
    b"Message-ID: <m1@sender.test>\r\nSubject: dots\r\n\r\n.leading dot\r\n..\r\nend\r\n";

#[tokio::test]
async fn a_pipelined_transaction_in_one_write_is_accepted_exactly_once() {
    let (mx, addr, log) = server(Limits::default());
    let mut c = Client::connect(addr).await;
    assert_eq!(c.reply().await, "220 mx1.example.test ESMTP mxlab");
    // Envelope, content and QUIT in a single write: nothing buffered may be lost.
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    all.extend_from_slice(b"QUIT\r\n");
    c.send(&all).await;
    assert_eq!(
        c.reply().await,
        "250-mx1.example.test\n250-PIPELINING\n250-8BITMIME\n250-SIZE 52428800\n\
         250-ENHANCEDSTATUSCODES\n250 SMTPUTF8"
    );
    assert_eq!(c.codes(3).await, vec![250, 250, 354]);
    let queued = c.reply().await;
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
    assert_eq!(c.reply().await, "221 2.0.0 Bye");
    c.expect_eof().await;

    let messages = mx.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.content, UNSTUFFED);
    assert_eq!(m.digest, sha256_hex(UNSTUFFED));
    assert_eq!(m.from, "alice@sender.test");
    assert_eq!(m.to, vec!["bob@example.test".to_string()]);
    assert_eq!(m.family, Family::Ipv4);

    let events = log.snapshot();
    let accepted: Vec<&EventKind> = events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::MessageAccepted { .. }))
        .collect();
    assert_eq!(
        accepted,
        vec![&EventKind::MessageAccepted {
            host: "mx1".into(),
            session: m.session,
            family: Family::Ipv4,
            from: "alice@sender.test".into(),
            to: vec!["bob@example.test".into()],
            size: UNSTUFFED.len(),
            digest: sha256_hex(UNSTUFFED),
            message_id: Some("<m1@sender.test>".into()),
        }]
    );
    // Commands are logged, content lines are not; every reply is logged.
    let commands: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SmtpCommand { line, .. } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        vec![
            "EHLO client.test",
            "MAIL FROM:<alice@sender.test>",
            "RCPT TO:<bob@example.test>",
            "DATA",
            "QUIT"
        ]
    );
    let replies = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SmtpReply { .. }))
        .count();
    assert_eq!(replies, 7);
    assert_eq!(closed_reasons(&events), vec!["quit"]);
    mx.shutdown().await;
}

#[tokio::test]
async fn content_sent_after_354_in_small_pieces_is_accepted() {
    let (mx, addr, _log) = server(Limits::default());
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(ENVELOPE).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 250, 354]);
    for piece in STUFFED.chunks(3) {
        c.send(piece).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.codes(1).await, vec![250]);
    // A second transaction in the same session.
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<postmaster@example.test>\r\nDATA\r\n")
        .await;
    assert_eq!(c.codes(3).await, vec![250, 250, 354]);
    c.send(b".\r\n").await;
    assert_eq!(c.codes(1).await, vec![250]);
    let messages = mx.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].content, UNSTUFFED);
    assert_eq!(messages[1].from, "");
    assert_eq!(messages[1].content, b"");
}

#[tokio::test]
async fn rcpt_after_a_rejected_mail_gets_503_and_nothing_is_stored() {
    let (mx, addr, log) = server(Limits::default());
    let mut c = Client::connect(addr).await;
    c.reply().await;
    // A pipelining client whose MAIL is refused must not get a transaction.
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<not an address>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(c.codes(4).await, vec![250, 501, 503, 503]);
    c.send(b"Subject: phantom\r\n\r\n.\r\nQUIT\r\n").await;
    // Not in DATA: those lines are (unknown) commands.
    assert_eq!(c.codes(4).await, vec![500, 500, 500, 221]);
    c.expect_eof().await;
    assert!(mx.messages().is_empty());
    assert!(!log
        .snapshot()
        .iter()
        .any(|e| matches!(e.kind, EventKind::MessageAccepted { .. })));
}

#[tokio::test]
async fn a_421_greeting_is_sent_then_the_connection_closes() {
    let log = EventLog::new();
    let (l, addr) = listener(
        "127.0.0.1:0",
        Family::Ipv4,
        Some("421 4.3.2 Service not available"),
    );
    let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listener(l)
        .start();
    let mut c = Client::connect(addr).await;
    assert_eq!(c.reply().await, "421 4.3.2 Service not available");
    c.expect_eof().await;
    let kinds: Vec<EventKind> = log.snapshot().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(
        matches!(&kinds[0], EventKind::SmtpConnected { host, family: Family::Ipv4, server, .. }
            if host == "mx1" && *server == addr)
    );
    assert_eq!(
        kinds[1],
        EventKind::SmtpReply {
            host: "mx1".into(),
            session: 1,
            reply: "421 4.3.2 Service not available".into()
        }
    );
    assert_eq!(
        kinds[2],
        EventKind::SmtpClosed {
            host: "mx1".into(),
            session: 1,
            reason: "greeting 421".into()
        }
    );
    mx.shutdown().await;
}

#[tokio::test]
async fn ipv6_with_421_and_ipv4_with_220_on_one_server_behave_differently() {
    let log = EventLog::new();
    let (v6, addr6) = listener(
        "[::1]:0",
        Family::Ipv6,
        Some("421 4.3.2 Service not available"),
    );
    let (v4, addr4) = listener("127.0.0.1:0", Family::Ipv4, None);
    let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listeners(vec![v6, v4])
        .start();

    // What a correct dual-stack MTA does: IPv6 first, then IPv4 after the 421.
    let mut c6 = Client::connect(addr6).await;
    assert_eq!(c6.reply().await, "421 4.3.2 Service not available");
    c6.expect_eof().await;
    let mut c4 = Client::connect(addr4).await;
    assert_eq!(c4.reply().await, "220 mx1.example.test ESMTP mxlab");
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    all.extend_from_slice(b"QUIT\r\n");
    c4.send(&all).await;
    assert_eq!(c4.codes(6).await, vec![250, 250, 250, 354, 250, 221]);
    c4.expect_eof().await;

    let events = log.snapshot();
    let connected: Vec<(SessionId, Family, SocketAddr)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::SmtpConnected {
                session,
                family,
                server,
                client,
                ..
            } => {
                assert_eq!(Family::of(client.ip()), family);
                Some((session, family, server))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        connected,
        vec![(1, Family::Ipv6, addr6), (2, Family::Ipv4, addr4)]
    );
    let accepted: Vec<(SessionId, Family)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::MessageAccepted {
                session, family, ..
            } => Some((session, family)),
            _ => None,
        })
        .collect();
    assert_eq!(accepted, vec![(2, Family::Ipv4)]);
    assert_eq!(closed_reasons(&events), vec!["greeting 421", "quit"]);
    let messages = mx.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].family, Family::Ipv4);
    mx.shutdown().await;
}

#[tokio::test]
async fn a_5xx_greeting_refuses_everything_but_quit() {
    let log = EventLog::new();
    let (l, addr) = listener("127.0.0.1:0", Family::Ipv4, Some("554 5.3.2 No thanks"));
    let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listener(l)
        .start();
    let mut c = Client::connect(addr).await;
    assert_eq!(c.reply().await, "554 5.3.2 No thanks");
    c.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        .await;
    assert_eq!(c.codes(4).await, vec![503, 503, 503, 503]);
    c.send(b"QUIT\r\n").await;
    assert_eq!(c.codes(1).await, vec![221]);
    c.expect_eof().await;
    assert!(mx.messages().is_empty());
    assert_eq!(closed_reasons(&log.snapshot()), vec!["quit"]);
}

#[tokio::test]
async fn an_over_long_line_gets_500_and_the_session_continues() {
    let (mx, addr, log) = server(Limits::default());
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut long = b"MAIL FROM:<".to_vec();
    long.extend(std::iter::repeat_n(b'a', 3000));
    long.extend_from_slice(b"@b.test>\r\nEHLO c\r\n");
    c.send(&long).await;
    assert_eq!(c.reply().await, "500 5.5.2 Error: line too long");
    assert_eq!(c.codes(1).await, vec![250]);
    let mut all =
        b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n".to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 354, 250]);
    assert_eq!(mx.messages().len(), 1);
    let logged = log.snapshot().into_iter().find_map(|e| match e.kind {
        EventKind::SmtpCommand { line, .. } => Some(line),
        _ => None,
    });
    assert!(
        logged.as_deref().is_some_and(
            |l| l.starts_with("MAIL FROM:<aaa") && l.ends_with("[line too long: 3019 bytes]")
        ),
        "{logged:?}"
    );
}

#[tokio::test]
async fn a_client_leaving_mid_data_stores_nothing_and_the_server_goes_on() {
    let (mx, addr, log) = server(Limits::default());
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(ENVELOPE).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 250, 354]);
    c.send(b"Subject: half\r\n\r\nsome of the body\r\n").await;
    drop(c);
    assert_eq!(
        wait_closed(&log, 1).await,
        vec!["client closed during DATA"]
    );
    assert!(mx.messages().is_empty());

    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(5).await, vec![250, 250, 250, 354, 250]);
    drop(c);
    assert_eq!(
        wait_closed(&log, 2).await,
        vec!["client closed during DATA", "client closed"]
    );
    assert_eq!(mx.messages().len(), 1);
    assert_eq!(mx.messages()[0].session, 2);
}

#[tokio::test]
async fn random_garbage_never_breaks_the_server() {
    let (mx, addr, log) = server(Limits::default());
    // Seeded noise, biased towards SMTP-looking bytes half of the time.
    let mut draws = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
    let mut noise = |n: usize, smtpish: bool| -> Vec<u8> {
        let alphabet: &[u8] = b"\r\n\r\n.<>:@ MAILFROMRCPTODATA\x00\xff";
        (0..n)
            .map(|_| {
                if smtpish {
                    alphabet[draws.usize(..alphabet.len())]
                } else {
                    draws.u8(..)
                }
            })
            .collect()
    };
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c = Client::connect(addr).await;
        c.reply().await;
        // Start a transaction on some, so the noise also hits DATA.
        if i % 2 == 0 {
            c.send(ENVELOPE).await;
        }
        c.send(&noise(20_000, i % 4 < 2)).await;
        clients.push(c);
    }
    drop(clients);
    assert_eq!(wait_closed(&log, 8).await.len(), 8);

    // The server still works, and every session ended properly (none panicked).
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    all.extend_from_slice(b"QUIT\r\n");
    c.send(&all).await;
    assert_eq!(c.codes(6).await, vec![250, 250, 250, 354, 250, 221]);
    let events = log.snapshot();
    let connected = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SmtpConnected { .. }))
        .count();
    assert_eq!(connected, 9);
    assert_eq!(wait_closed(&log, 9).await.len(), 9);
    assert!(mx.messages().iter().any(|m| m.content == UNSTUFFED));
}

#[tokio::test]
async fn an_idle_client_gets_421_and_is_closed() {
    let (_mx, addr, log) = server(Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    });
    let mut c = Client::connect(addr).await;
    c.reply().await;
    assert_eq!(
        c.reply().await,
        "421 4.4.2 mx1.example.test Error: timeout exceeded"
    );
    c.expect_eof().await;
    assert_eq!(closed_reasons(&log.snapshot()), vec!["timeout"]);
}

#[tokio::test]
async fn oversized_messages_get_552() {
    let (mx, addr, _log) = server(Limits {
        max_message: 1000,
        ..Limits::default()
    });
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend(std::iter::repeat_n(b'x', 5000));
    all.extend_from_slice(b"\r\n.\r\nMAIL FROM:<a@b.test> SIZE=1001\r\nNOOP\r\n");
    c.send(&all).await;
    assert_eq!(c.codes(7).await, vec![250, 250, 250, 354, 552, 552, 250]);
    assert!(mx.messages().is_empty());
}

#[tokio::test]
async fn shutdown_ends_sessions_and_stops_accepting() {
    let (mx, addr, log) = server(Limits::default());
    let mut c = Client::connect(addr).await;
    c.reply().await;
    mx.shutdown().await;
    c.expect_eof().await;
    assert_eq!(closed_reasons(&log.snapshot()), vec!["server shutdown"]);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn session_ids_are_unique_across_servers() {
    let log = EventLog::new();
    let ids = SessionIds::new();
    let (l1, a1) = listener("127.0.0.1:0", Family::Ipv4, None);
    let (l2, a2) = listener("127.0.0.1:0", Family::Ipv4, None);
    let mx1 = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listener(l1)
        .session_ids(ids.clone())
        .start();
    let mx2 = MxBuilder::new("mx2", "mx2.example.test", log.clone())
        .listener(l2)
        .session_ids(ids.clone())
        .start();
    for addr in [a1, a2, a1] {
        let mut c = Client::connect(addr).await;
        c.reply().await;
    }
    log.wait_until(WAIT, |events| {
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::SmtpConnected { .. }))
            .count()
            == 3
    })
    .await;
    let mut sessions: Vec<(String, SessionId)> = log
        .snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::SmtpConnected { host, session, .. } => Some((host, session)),
            _ => None,
        })
        .collect();
    sessions.sort_by_key(|(_, s)| *s);
    let ids: Vec<SessionId> = sessions.iter().map(|(_, s)| *s).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(
        sessions.iter().filter(|(h, _)| h == "mx2").count(),
        1,
        "{sessions:?}"
    );
    mx1.shutdown().await;
    mx2.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Scripted behaviour, extensions and STARTTLS.

/// One listener on `addr` with `behaviour`, serving with `limits` and the optional authority.
fn server_with(
    addr: &str,
    behaviour: ListenerBehaviour,
    limits: Limits,
    tls: Option<&Authority>,
) -> (RunningMx, SocketAddr, EventLog) {
    let log = EventLog::new();
    let socket = std::net::TcpListener::bind(addr).expect("bind loopback");
    let local = socket.local_addr().unwrap();
    let family = Family::of(local.ip());
    let listener = Listener {
        socket,
        family,
        behaviour,
    };
    let mut builder = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listener(listener)
        .limits(limits);
    if let Some(authority) = tls {
        builder = builder.tls(authority.clone());
    }
    let mx = builder.try_start().unwrap();
    (mx, local, log)
}

fn scripted(rules: Vec<StageRule>) -> (RunningMx, SocketAddr, EventLog) {
    let behaviour = ListenerBehaviour {
        rules,
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    server_with("127.0.0.1:0", behaviour, Limits::default(), None)
}

/// The bytes a reply read by [`Client::reply`] took on the wire.
fn wire_len(reply: &str) -> usize {
    reply.lines().map(|l| l.len() + 2).sum()
}

fn say(stage: SmtpStage, text: &str) -> StageRule {
    StageRule::new(stage, StageAction::Reply(text.to_string()))
}

fn replies_logged(log: &EventLog) -> Vec<String> {
    log.snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::SmtpReply { reply, .. } => Some(reply),
            _ => None,
        })
        .collect()
}

fn tls_details(log: &EventLog) -> Vec<String> {
    log.snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::SmtpTls { detail, .. } => Some(detail),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn scripted_replies_replace_the_normal_ones_at_every_stage() {
    // Greeting (multi-line), EHLO refused (the client falls back to HELO), HELO text.
    let (_mx, addr, log) = scripted(vec![
        say(
            SmtpStage::Greeting,
            "220-mx1.example.test first line\n220 second line",
        ),
        say(SmtpStage::Ehlo, "502 5.5.1 No EHLO here"),
        say(SmtpStage::Helo, "250 mx1 says hello"),
        say(SmtpStage::Quit, "221-See you\n221 2.0.0 Bye now"),
    ]);
    let mut c = Client::connect(addr).await;
    assert_eq!(
        c.reply().await,
        "220-mx1.example.test first line\n220 second line"
    );
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nHELO client.test\r\nQUIT\r\n")
        .await;
    assert_eq!(c.reply().await, "502 5.5.1 No EHLO here");
    // Not greeted after a refused EHLO.
    assert_eq!(c.codes(1).await, vec![503]);
    assert_eq!(c.reply().await, "250 mx1 says hello");
    assert_eq!(c.reply().await, "221-See you\n221 2.0.0 Bye now");
    c.expect_eof().await;
    // Scripted replies are logged like any other.
    assert_eq!(
        replies_logged(&log)[0],
        "220-mx1.example.test first line\n220 second line"
    );
    assert_eq!(wait_closed(&log, 1).await, vec!["quit"]);

    // MAIL refused: RCPT and DATA are bad sequences, nothing is stored.
    let (mx, addr, _log) = scripted(vec![say(SmtpStage::Mail, "451 4.3.0 Try later")]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(4).await, vec![250, 451, 503, 503]);
    assert!(mx.messages().is_empty());

    // RCPT 451 for one recipient while another is accepted.
    let (mx, addr, _log) = scripted(vec![StageRule::for_recipient(
        "greylisted@example.test",
        StageAction::Reply("451 4.7.1 Greylisted, try again".into()),
    )]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<greylisted@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n".to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(2).await, vec![250, 250]);
    assert_eq!(c.reply().await, "451 4.7.1 Greylisted, try again");
    assert_eq!(c.codes(3).await, vec![250, 354, 250]);
    let messages = mx.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, vec!["bob@example.test".to_string()]);

    // DATA refused: the transaction stays (MAIL is nested), RSET clears it.
    let (mx, addr, _log) = scripted(vec![say(SmtpStage::Data, "554 5.5.0 No data today")]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(ENVELOPE).await;
    assert_eq!(c.codes(3).await, vec![250, 250, 250]);
    assert_eq!(c.reply().await, "554 5.5.0 No data today");
    c.send(b"MAIL FROM:<a@b.test>\r\nRSET\r\nMAIL FROM:<a@b.test>\r\n")
        .await;
    assert_eq!(c.codes(3).await, vec![503, 250, 250]);
    assert!(mx.messages().is_empty());

    // End of data refused: nothing stored, no MessageAccepted.
    let (mx, addr, log) = scripted(vec![say(
        SmtpStage::EndOfData,
        "554 5.7.1 Content rejected",
    )]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    all.extend_from_slice(b"QUIT\r\n");
    c.send(&all).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 250, 354]);
    assert_eq!(c.reply().await, "554 5.7.1 Content rejected");
    assert_eq!(c.codes(1).await, vec![221]);
    c.expect_eof().await;
    assert!(mx.messages().is_empty());
    wait_closed(&log, 1).await;
    assert!(!log
        .snapshot()
        .iter()
        .any(|e| matches!(e.kind, EventKind::MessageAccepted { .. })));
}

#[tokio::test]
async fn a_scripted_starttls_refusal_keeps_the_session_plain() {
    let ca = Authority::new().unwrap();
    let behaviour = ListenerBehaviour {
        rules: vec![say(
            SmtpStage::StartTls,
            "454 4.7.0 TLS not available due to temporary reason",
        )],
        tls: TlsMode::Valid,
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    let (mx, addr, log) = server_with("127.0.0.1:0", behaviour, Limits::default(), Some(&ca));
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(b"EHLO c\r\nSTARTTLS\r\n").await;
    assert!(c.reply().await.contains("250-STARTTLS"));
    assert_eq!(c.codes(1).await, vec![454]);
    let mut all = ENVELOPE[b"EHLO client.test\r\n".len()..].to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 354, 250]);
    assert_eq!(mx.messages()[0].tls, None);
    assert!(tls_details(&log).is_empty());
}

/// Asserts nothing arrives within a second and the connection is still open.
async fn expect_silence<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>, log: &EventLog) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(1), c.stream.read(&mut byte)).await;
    assert!(read.is_err(), "expected silence, got {read:?}");
    assert!(closed_reasons(&log.snapshot()).is_empty());
}

#[tokio::test]
async fn a_stall_says_nothing_and_keeps_the_connection_open() {
    // At the greeting.
    let (_mx, addr, log) = scripted(vec![StageRule::new(
        SmtpStage::Greeting,
        StageAction::Stall,
    )]);
    let mut c = Client::connect(addr).await;
    expect_silence(&mut c, &log).await;
    c.send(b"EHLO c\r\n").await;
    expect_silence(&mut c, &log).await;
    drop(c);
    assert_eq!(wait_closed(&log, 1).await, vec!["client closed"]);

    // At RCPT: replies before it arrive, then nothing (the commands are still logged).
    let (mx, addr, log) = scripted(vec![StageRule::new(SmtpStage::Rcpt, StageAction::Stall)]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(2).await, vec![250, 250]);
    expect_silence(&mut c, &log).await;
    let commands = log
        .snapshot()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SmtpCommand { .. }))
        .count();
    assert!(commands >= 4, "{commands}");
    drop(c);
    assert_eq!(wait_closed(&log, 1).await, vec!["client closed"]);
    assert!(mx.messages().is_empty());

    // At end of data, until the idle timeout: closed without a reply, nothing stored.
    let behaviour = ListenerBehaviour {
        rules: vec![StageRule::new(SmtpStage::EndOfData, StageAction::Stall)],
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    let limits = Limits {
        idle_timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    let (mx, addr, log) = server_with("127.0.0.1:0", behaviour, limits, None);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 250, 354]);
    expect_silence(&mut c, &log).await;
    c.expect_eof().await;
    assert_eq!(
        wait_closed(&log, 1).await,
        vec!["timeout (stalled at end of data)"]
    );
    assert!(mx.messages().is_empty());
}

#[tokio::test]
async fn a_disconnect_closes_without_a_reply() {
    let (_mx, addr, log) = scripted(vec![StageRule::new(
        SmtpStage::Greeting,
        StageAction::Disconnect,
    )]);
    let mut c = Client::connect(addr).await;
    c.expect_eof().await;
    assert_eq!(
        wait_closed(&log, 1).await,
        vec!["scripted disconnect at greeting"]
    );
    assert!(replies_logged(&log).is_empty());

    let (mx, addr, log) = scripted(vec![StageRule::new(
        SmtpStage::Data,
        StageAction::Disconnect,
    )]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    // The replies to the commands before DATA still arrive.
    assert_eq!(c.codes(3).await, vec![250, 250, 250]);
    c.expect_eof().await;
    assert_eq!(
        wait_closed(&log, 1).await,
        vec!["scripted disconnect at DATA"]
    );
    assert!(mx.messages().is_empty());

    let (mx, addr, log) = scripted(vec![StageRule::new(
        SmtpStage::EndOfData,
        StageAction::Disconnect,
    )]);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(4).await, vec![250, 250, 250, 354]);
    c.expect_eof().await;
    assert_eq!(
        wait_closed(&log, 1).await,
        vec!["scripted disconnect at end of data"]
    );
    assert!(mx.messages().is_empty());
}

#[tokio::test]
async fn slow_replies_take_at_least_their_length_over_the_rate() {
    let (mx, addr, log) = scripted(vec![
        StageRule::new(
            SmtpStage::Greeting,
            StageAction::Slow {
                bytes_per_second: 100,
            },
        ),
        StageRule::new(
            SmtpStage::Ehlo,
            StageAction::Slow {
                bytes_per_second: 400,
            },
        ),
        StageRule::new(
            SmtpStage::EndOfData,
            StageAction::Slow {
                bytes_per_second: 200,
            },
        ),
    ]);
    let started = std::time::Instant::now();
    let mut c = Client::connect(addr).await;
    let greeting = c.reply().await;
    let took = started.elapsed();
    let len = wire_len(&greeting);
    assert!(
        took >= Duration::from_secs_f64(len as f64 / 100.0),
        "{len} bytes in {took:?}"
    );

    let started = std::time::Instant::now();
    c.send(b"EHLO client.test\r\n").await;
    let ehlo = c.reply().await;
    let took = started.elapsed();
    let len = wire_len(&ehlo);
    assert!(
        took >= Duration::from_secs_f64(len as f64 / 400.0),
        "{len} bytes in {took:?}"
    );
    assert!(ehlo.ends_with("250 SMTPUTF8"));

    // Other stages are at full speed; the slow end of data still stores the message.
    let started = std::time::Instant::now();
    let mut all = ENVELOPE[b"EHLO client.test\r\n".len()..].to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(3).await, vec![250, 250, 354]);
    assert!(started.elapsed() < Duration::from_millis(500));
    let queued = c.reply().await;
    let took = started.elapsed();
    let len = wire_len(&queued);
    assert!(
        took >= Duration::from_secs_f64(len as f64 / 200.0),
        "{len} bytes in {took:?}"
    );
    assert_eq!(mx.messages().len(), 1);
    assert_eq!(replies_logged(&log).len(), 6);
}

#[tokio::test]
async fn extensions_show_in_the_ehlo_reply_and_the_reply_can_be_padded() {
    let behaviour = ListenerBehaviour {
        extensions: Extensions {
            pipelining: false,
            eightbitmime: true,
            size: false,
            starttls: true,
            enhancedstatuscodes: false,
            dsn: true,
            smtputf8: false,
        },
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    let (_mx, addr, _log) = server_with("[::1]:0", behaviour, Limits::default(), None);
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(b"EHLO c\r\nMAIL FROM:<a@b.test> SMTPUTF8\r\nMAIL FROM:<a@b.test> RET=HDRS\r\n")
        .await;
    // STARTTLS is not offered without TLS, whatever the extension says.
    assert_eq!(
        c.reply().await,
        "250-mx1.example.test\n250-8BITMIME\n250 DSN"
    );
    assert_eq!(c.reply().await, "555 Unsupported parameter SMTPUTF8");
    assert_eq!(c.reply().await, "250 Ok");

    for want in [1000, 4096, 20_000] {
        let behaviour = ListenerBehaviour {
            ehlo_pad_to: Some(want),
            ..ListenerBehaviour::normal("mx1.example.test")
        };
        let (_mx, addr, _log) = server_with("127.0.0.1:0", behaviour, Limits::default(), None);
        let mut c = Client::connect(addr).await;
        c.reply().await;
        c.send(b"EHLO c\r\n").await;
        let ehlo = c.reply().await;
        let wire = wire_len(&ehlo);
        assert!((want..want + 18).contains(&wire), "{want}: {wire}");
        assert!(ehlo.starts_with("250-mx1.example.test\n250-X-MXLAB-PAD-"));
        assert!(ehlo.ends_with("250-ENHANCEDSTATUSCODES\n250 SMTPUTF8"));
        c.send(b"NOOP\r\n").await;
        assert_eq!(c.codes(1).await, vec![250]);
    }
}

fn client_config(
    ca: &Authority,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der()).unwrap();
    // The PEM is what a SUT gets: it must say the same.
    assert!(ca.ca_pem().contains("BEGIN CERTIFICATE"));
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn tls_server(mode: TlsMode, ca: &Authority, addr: &str) -> (RunningMx, SocketAddr, EventLog) {
    let behaviour = ListenerBehaviour {
        tls: mode,
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    server_with(addr, behaviour, Limits::default(), Some(ca))
}

/// Connects, EHLOs, sends STARTTLS and reads the 220.
async fn to_starttls(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(b"EHLO client.test\r\n").await;
    assert!(c.reply().await.contains("\n250-STARTTLS\n"));
    c.send(b"STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    c
}

#[tokio::test]
async fn starttls_with_a_valid_certificate_then_a_transaction() {
    let ca = Authority::new().unwrap();
    let (mx, addr, log) = tls_server(TlsMode::Valid, &ca, "[::1]:0");
    let c = to_starttls(addr).await;
    let mut c = c
        .tls(
            client_config(&ca, rustls::DEFAULT_VERSIONS),
            "mx1.example.test",
        )
        .await
        .expect("handshake");
    // The session restarted: EHLO again, and no STARTTLS any more.
    c.send(b"MAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(c.codes(1).await, vec![503]);
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    all.extend_from_slice(b"QUIT\r\n");
    c.send(&all).await;
    let ehlo = c.reply().await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(c.codes(5).await, vec![250, 250, 354, 250, 221]);
    assert_eq!(wait_closed(&log, 1).await, vec!["quit"]);

    let messages = mx.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content, UNSTUFFED);
    assert_eq!(messages[0].family, Family::Ipv6);
    assert_eq!(
        messages[0].tls.as_deref(),
        Some("TLSv1.3 TLS13_AES_256_GCM_SHA384")
    );
    assert_eq!(tls_details(&log), vec!["TLSv1.3 TLS13_AES_256_GCM_SHA384"]);
    let shown = log
        .snapshot()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::SmtpTls { .. }))
        .unwrap()
        .kind
        .to_string();
    assert_eq!(shown, "smtp  mx1#1 tls TLSv1.3 TLS13_AES_256_GCM_SHA384");
}

#[tokio::test]
async fn starttls_over_tls_1_2_and_pipelined_plain_text_is_discarded() {
    let ca = Authority::new().unwrap();
    let (mx, addr, log) = tls_server(TlsMode::Valid, &ca, "127.0.0.1:0");
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.send(b"EHLO client.test\r\n").await;
    c.reply().await;
    // An injection attempt: a command pipelined after STARTTLS must not survive the upgrade.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS");
    let mut c = c
        .tls(
            client_config(&ca, &[&rustls::version::TLS12]),
            "mx1.example.test",
        )
        .await
        .expect("handshake");
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(5).await, vec![250, 250, 250, 354, 250]);
    let messages = mx.messages();
    assert_eq!(messages[0].from, "alice@sender.test");
    let tls = messages[0].tls.clone().unwrap();
    assert!(tls.starts_with("TLSv1.2 TLS_ECDHE_ECDSA_WITH_"), "{tls}");
    let details = tls_details(&log);
    assert_eq!(
        details,
        vec![format!("{tls} (32 bytes sent after STARTTLS discarded)")]
    );
    assert!(!log.snapshot().iter().any(
        |e| matches!(&e.kind, EventKind::SmtpCommand { line, .. } if line.contains("injected"))
    ));
}

/// The rustls error inside a failed handshake.
fn rustls_error(error: &std::io::Error) -> &rustls::Error {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {error:?}"))
}

#[tokio::test]
async fn expired_and_wrong_name_certificates_are_rejected_by_a_verifying_client() {
    use rustls::CertificateError;

    let ca = Authority::new().unwrap();
    for (mode, addr) in [
        (TlsMode::Expired, "127.0.0.1:0"),
        (TlsMode::WrongName, "[::1]:0"),
    ] {
        let (mx, addr, log) = tls_server(mode, &ca, addr);
        let c = to_starttls(addr).await;
        let error = c
            .tls(
                client_config(&ca, rustls::DEFAULT_VERSIONS),
                "mx1.example.test",
            )
            .await
            .err()
            .expect("the handshake must fail");
        let rustls::Error::InvalidCertificate(why) = rustls_error(&error) else {
            panic!("{mode}: {error}");
        };
        match mode {
            TlsMode::Expired => assert!(
                matches!(
                    why,
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                ),
                "{why:?}"
            ),
            _ => assert!(
                matches!(
                    why,
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ),
                "{why:?}"
            ),
        }
        let closed = wait_closed(&log, 1).await;
        assert!(closed[0].starts_with("tls handshake failed"), "{closed:?}");
        let details = tls_details(&log);
        assert!(details[0].starts_with("handshake failed: "), "{details:?}");
        assert!(mx.messages().is_empty());
    }

    // The wrong-name certificate does verify for the name it was made for.
    let (_mx, addr, _log) = tls_server(TlsMode::WrongName, &ca, "127.0.0.1:0");
    let c = to_starttls(addr).await;
    c.tls(
        client_config(&ca, rustls::DEFAULT_VERSIONS),
        tls::WRONG_NAME,
    )
    .await
    .expect("handshake for the other name");
}

#[tokio::test]
async fn a_broken_handshake_fails_the_client() {
    let ca = Authority::new().unwrap();
    let (_mx, addr, log) = tls_server(TlsMode::BrokenHandshake, &ca, "127.0.0.1:0");
    let c = to_starttls(addr).await;
    let error = c
        .tls(
            client_config(&ca, rustls::DEFAULT_VERSIONS),
            "mx1.example.test",
        )
        .await
        .err()
        .expect("the handshake must fail");
    // Whatever rustls makes of the garbage, it is a TLS-level failure, not a timeout.
    let _ = rustls_error(&error);
    assert_eq!(
        wait_closed(&log, 1).await,
        vec!["tls handshake broken on purpose"]
    );
    assert!(tls_details(&log)[0].starts_with("handshake failed: broken on purpose"));

    // Also without an authority: the broken mode needs no certificate.
    let behaviour = ListenerBehaviour {
        tls: TlsMode::BrokenHandshake,
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    let (_mx, addr, _log) = server_with("127.0.0.1:0", behaviour, Limits::default(), None);
    let c = to_starttls(addr).await;
    assert!(c
        .tls(
            client_config(&ca, rustls::DEFAULT_VERSIONS),
            "mx1.example.test"
        )
        .await
        .is_err());
}

#[tokio::test]
async fn an_oversized_chain_verifies_and_is_over_3_kb() {
    let ca = Authority::new().unwrap();
    let (mx, addr, log) = tls_server(TlsMode::OversizedChain, &ca, "127.0.0.1:0");
    let c = to_starttls(addr).await;
    let mut c = c
        .tls(
            client_config(&ca, rustls::DEFAULT_VERSIONS),
            "mx1.example.test",
        )
        .await
        .expect("handshake");
    let (_, connection) = c.stream.get_ref().get_ref();
    let chain = connection.peer_certificates().unwrap();
    let bytes: usize = chain.iter().map(|c| c.len()).sum();
    assert_eq!(chain.len(), 5);
    assert!(bytes >= 3 * 1024, "{bytes}");
    let mut all = ENVELOPE.to_vec();
    all.extend_from_slice(STUFFED);
    c.send(&all).await;
    assert_eq!(c.codes(5).await, vec![250, 250, 250, 354, 250]);
    assert!(mx.messages()[0].tls.is_some());
    assert_eq!(tls_details(&log).len(), 1);
}

#[tokio::test]
async fn a_tls_listener_without_an_authority_is_an_error() {
    let behaviour = ListenerBehaviour {
        tls: TlsMode::Valid,
        ..ListenerBehaviour::normal("mx1.example.test")
    };
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = Listener {
        socket,
        family: Family::Ipv4,
        behaviour: behaviour.clone(),
    };
    let error = MxBuilder::new("mx1", "mx1.example.test", EventLog::new())
        .listener(listener)
        .try_start()
        .expect_err("no authority");
    assert!(
        matches!(
            error,
            MxError::Tls {
                mode: TlsMode::Valid,
                ..
            }
        ),
        "{error}"
    );

    let log = EventLog::new();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listener = Listener {
        socket,
        family: Family::Ipv4,
        behaviour,
    };
    let _mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listener(listener)
        .start();
    assert!(
        matches!(&log.snapshot()[0].kind, EventKind::Harness { message } if message.contains("no certificate authority"))
    );
}
