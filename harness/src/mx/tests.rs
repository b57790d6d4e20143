//! The server over real TCP on loopback (127.0.0.1 and [::1]); no mocks.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::events::Event;

const WAIT: Duration = Duration::from_secs(5);

fn listener(addr: &str, family: Family, greeting: Option<&str>) -> (Listener, SocketAddr) {
    let socket = std::net::TcpListener::bind(addr).expect("bind loopback");
    let local = socket.local_addr().unwrap();
    let behaviour = match greeting {
        Some(greeting) => ListenerBehaviour {
            greeting: greeting.to_string(),
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
    let mx = try_start(
        "mx1",
        "mx1.example.test",
        vec![l],
        log.clone(),
        SessionIds::new(),
        limits,
    )
    .unwrap();
    (mx, addr, log)
}

struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self {
            stream: BufReader::new(stream),
        }
    }

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
    let mx = start(
        "mx1",
        "mx1.example.test",
        vec![l],
        log.clone(),
        SessionIds::new(),
    );
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
    let mx = start(
        "mx1",
        "mx1.example.test",
        vec![v6, v4],
        log.clone(),
        SessionIds::new(),
    );

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
    let mx = start(
        "mx1",
        "mx1.example.test",
        vec![l],
        log.clone(),
        SessionIds::new(),
    );
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
    // Deterministic xorshift noise, biased towards SMTP-looking bytes half of the time.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut noise = |n: usize, smtpish: bool| -> Vec<u8> {
        let alphabet: &[u8] = b"\r\n\r\n.<>:@ MAILFROMRCPTODATA\x00\xff";
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if smtpish {
                    alphabet[(x % alphabet.len() as u64) as usize]
                } else {
                    x as u8
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
    let mx1 = start(
        "mx1",
        "mx1.example.test",
        vec![l1],
        log.clone(),
        ids.clone(),
    );
    let mx2 = start(
        "mx2",
        "mx2.example.test",
        vec![l2],
        log.clone(),
        ids.clone(),
    );
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
