//! Snapshot tests: the event transcripts of a few representative sessions, as a reader of a
//! run's report sees them (each event's `Display`), pinned with `insta`.
//!
//! Client ports, session ids, queue ids and digests vary from run to run and are redacted.
//! After an intended change of the server's replies or events, review and accept the new
//! transcripts with `INSTA_UPDATE=always cargo test -p mxlab --lib mx::snapshots` (or
//! `cargo insta review`) and commit the `.snap` files under `snapshots/`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::events::Event;
use crate::events::EventKind;

const WAIT: Duration = Duration::from_secs(5);

/// Redactions for what varies between runs.
const FILTERS: &[(&str, &str)] = &[
    (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
    (r"#\d+ ", "#[session] "),
    (r"mxlab-\d+-\d+", "[queue-id]"),
    (r"\b[0-9a-f]{64}\b", "[digest]"),
];

/// A server with one IPv4 listener behaving as `behaviour`.
fn server(behaviour: ListenerBehaviour) -> (RunningMx, SocketAddr, EventLog) {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = socket.local_addr().expect("local address");
    let log = EventLog::new();
    let mx = MxBuilder::new("mx1", "mx1.example.test", log.clone())
        .listeners(vec![Listener {
            socket,
            family: Family::Ipv4,
            behaviour,
        }])
        .try_start()
        .expect("start the server");
    (mx, addr, log)
}

fn normal() -> ListenerBehaviour {
    ListenerBehaviour::normal("mx1.example.test")
}

/// A client reading replies in lockstep.
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
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    /// One reply's first line (continuation lines are read and dropped).
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.stream.read_line(&mut line))
                .await
                .expect("reply timed out")
                .expect("read");
            assert!(n > 0, "the server closed the connection");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    /// Sends a line and returns the reply.
    async fn say(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Waits for the server to close.
    async fn eof(mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server did not close")
            .expect("read to the end");
        assert!(rest.is_empty(), "bytes after the last reply: {rest:?}");
    }
}

/// The session's events that make its transcript, one `Display` line each, once the session
/// has closed.
async fn transcript(log: &EventLog) -> String {
    let closed = |events: &[Event]| {
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::SmtpClosed { .. }))
    };
    assert!(
        log.wait_until(WAIT, closed).await,
        "the session never closed"
    );
    log.snapshot()
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::SmtpConnected { .. }
                    | EventKind::SmtpCommand { .. }
                    | EventKind::SmtpReply { .. }
                    | EventKind::MessageAccepted { .. }
                    | EventKind::SmtpClosed { .. }
            )
        })
        .map(|e| e.kind.to_string() + "\n")
        .collect()
}

/// Pins `transcript` as the snapshot `name`, redacted.
fn pin(name: &str, transcript: &str) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in FILTERS {
        settings.add_filter(pattern, *replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, transcript));
}

const MESSAGE: &str =
    "Message-ID: <s1@sender.test>\r\nSubject: snapshot\r\n\r\n..a stuffed dot\r\nbye\r\n.\r\n";

#[tokio::test]
async fn plain_delivery() {
    let (mx, addr, log) = server(normal());
    let mut c = Client::connect(addr).await;
    assert!(c.reply().await.starts_with("220 "));
    c.say("EHLO client.sender.test").await;
    c.say("MAIL FROM:<alice@sender.test> SIZE=80").await;
    c.say("RCPT TO:<bob@example.test>").await;
    assert!(c.say("DATA").await.starts_with("354 "));
    c.send(MESSAGE.as_bytes()).await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(c.say("QUIT").await, "221 2.0.0 Bye");
    c.eof().await;
    pin("plain_delivery", &transcript(&log).await);
    assert_eq!(mx.messages().len(), 1);
}

#[tokio::test]
async fn pipelined_delivery() {
    let (mx, addr, log) = server(normal());
    let mut c = Client::connect(addr).await;
    assert!(c.reply().await.starts_with("220 "));
    let all = format!(
        "EHLO client.sender.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@example.test>\r\n\
         RCPT TO:<carol@example.test>\r\nDATA\r\n{MESSAGE}QUIT\r\n"
    );
    c.send(all.as_bytes()).await;
    for _ in 0..7 {
        c.reply().await;
    }
    c.eof().await;
    pin("pipelined_delivery", &transcript(&log).await);
    assert_eq!(mx.messages()[0].to.len(), 2);
}

#[tokio::test]
async fn greeting_421() {
    let (mx, addr, log) = server(ListenerBehaviour {
        greeting: "421 4.3.2 mx1.example.test Service not available, closing channel".into(),
        ..normal()
    });
    let mut c = Client::connect(addr).await;
    assert!(c.reply().await.starts_with("421 "));
    c.eof().await;
    pin("greeting_421", &transcript(&log).await);
    assert!(mx.messages().is_empty());
}

#[tokio::test]
async fn one_of_two_recipients_rejected() {
    let (mx, addr, log) = server(ListenerBehaviour {
        rules: vec![StageRule::for_recipient(
            "nobody@example.test",
            StageAction::Reply(
                "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown".into(),
            ),
        )],
        ..normal()
    });
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.say("EHLO client.sender.test").await;
    c.say("MAIL FROM:<alice@sender.test>").await;
    assert!(c
        .say("RCPT TO:<nobody@example.test>")
        .await
        .starts_with("550 "));
    assert!(c
        .say("RCPT TO:<bob@example.test>")
        .await
        .starts_with("250 "));
    c.say("DATA").await;
    c.send(MESSAGE.as_bytes()).await;
    assert!(c.reply().await.starts_with("250 "));
    c.say("QUIT").await;
    c.eof().await;
    pin("one_of_two_recipients_rejected", &transcript(&log).await);
    assert_eq!(mx.messages()[0].to, vec!["bob@example.test".to_string()]);
}

#[tokio::test]
async fn over_long_line() {
    let (mx, addr, log) = server(normal());
    let mut c = Client::connect(addr).await;
    c.reply().await;
    c.say("EHLO client.sender.test").await;
    let long = format!("MAIL FROM:<{}@sender.test>", "x".repeat(3000));
    assert_eq!(c.say(&long).await, "500 5.5.2 Error: line too long");
    assert_eq!(c.say("NOOP").await, "250 2.0.0 Ok");
    c.say("QUIT").await;
    c.eof().await;
    pin("over_long_line", &transcript(&log).await);
    assert!(mx.messages().is_empty());
}
