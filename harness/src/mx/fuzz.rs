//! Property tests of the fake MX server.
//!
//! Three properties, each checked by one transcript checker ([`check`]):
//!
//! * random bytes (CR/LF-heavy runs, NULs, high bytes, over-long lines, stray command lines)
//!   sent in random chunk sizes to a real server on 127.0.0.1;
//! * random sequences of plausible commands (EHLO, HELO, MAIL, RCPT, DATA with content, RSET,
//!   NOOP, VRFY, QUIT, STARTTLS, garbage) with random arguments, the same way;
//! * the same command sequences fed straight to the I/O-free [`Session`], in random pieces and
//!   in one piece (the effects must not depend on the chunking), under several behaviours
//!   (5xx and 4xx greetings, scripted MAIL and RCPT refusals, extensions off).
//!
//! What every case must show: the server neither panics nor hangs (the case ends within
//! [`CASE_TIME`], and a fresh well-formed transaction on a new connection succeeds afterwards);
//! every session ends with exactly one `SmtpClosed` event; replies are well-formed SMTP (three
//! digits, `-` or space, CRLF, one code per reply) and the bytes on the wire are exactly the
//! logged replies; nothing follows a `221`; every command gets exactly one reply; MAIL needs a
//! greeting and no transaction in progress, RCPT needs a successful MAIL (so RCPT after a
//! failed MAIL gets `503`), DATA needs a recipient; and a message is stored only right before
//! the `250` that ends its DATA phase, with the recipients the transaction accepted.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use sha2::{Digest, Sha256};
use smtp_proto::Request;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use super::reply::Reply;
use super::session::{Effect, Session};
use super::*;
use crate::events::Event;
use crate::events::EventKind;

/// The most one network case may take, fresh transaction and shutdown included.
const CASE_TIME: Duration = Duration::from_secs(5);

/// The hostname the fuzzed servers use.
const HOSTNAME: &str = "mx1.example.test";

/// The limits of the fuzzed servers: small enough that the size and recipient limits are hit
/// by random input; timeouts far above [`CASE_TIME`] so a hang shows as a case timeout.
fn limits() -> Limits {
    Limits {
        max_line: 2048,
        max_message: 4096,
        max_recipients: 3,
        idle_timeout: Duration::from_secs(60),
        linger: Duration::from_secs(2),
    }
}

/// One runtime for every network case (cases of both network tests may run at once).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

// ---------------------------------------------------------------------------------------------
// Transcripts and the checker.

/// One step of a session, as the event log (or the state machine's effects) tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A command line (as logged: lossy UTF-8).
    Command(String),
    /// A reply, lines joined with `\n`.
    Reply(String),
    /// A stored message: its number of recipients and size.
    Accepted { recipients: usize, size: usize },
    /// The session ended.
    Closed(String),
}

/// The steps of session `id` in `events`; fails unless it starts with `SmtpConnected` and has
/// exactly one `SmtpClosed`, last.
fn steps_from_log(events: &[Event], id: SessionId) -> Result<Vec<Step>, TestCaseError> {
    let mut connected = 0;
    let mut steps = Vec::new();
    for event in events {
        let step = match &event.kind {
            EventKind::SmtpConnected { session, .. } if *session == id => {
                prop_assert!(steps.is_empty(), "SmtpConnected after {steps:?}");
                connected += 1;
                continue;
            }
            EventKind::SmtpCommand { session, line, .. } if *session == id => {
                Step::Command(line.clone())
            }
            EventKind::SmtpReply { session, reply, .. } if *session == id => {
                Step::Reply(reply.clone())
            }
            EventKind::MessageAccepted {
                session, to, size, ..
            } if *session == id => Step::Accepted {
                recipients: to.len(),
                size: *size,
            },
            EventKind::SmtpClosed {
                session, reason, ..
            } if *session == id => Step::Closed(reason.clone()),
            EventKind::SmtpTls {
                session, detail, ..
            } if *session == id => {
                return Err(TestCaseError::fail(format!(
                    "TLS event without TLS: {detail}"
                )));
            }
            _ => continue,
        };
        steps.push(step);
    }
    prop_assert_eq!(connected, 1, "SmtpConnected events of session {}", id);
    let closed = steps
        .iter()
        .filter(|s| matches!(s, Step::Closed(_)))
        .count();
    prop_assert_eq!(
        closed,
        1,
        "SmtpClosed events of session {}: {:?}",
        id,
        steps
    );
    prop_assert!(
        matches!(steps.last(), Some(Step::Closed(_))),
        "SmtpClosed is not last: {steps:?}"
    );
    Ok(steps)
}

/// The steps the state machine's effects amount to (a session that has not closed has no
/// `Closed` step). Other effects (policy notes) are not steps.
fn steps_from_effects(effects: &[Effect]) -> Vec<Step> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Command(line) => Some(Step::Command(line.clone())),
            Effect::Reply(reply) | Effect::Trickle(reply, _) => Some(Step::Reply(reply.log_text())),
            Effect::Accepted(accepted) => Some(Step::Accepted {
                recipients: accepted.to.len(),
                size: accepted.content.len(),
            }),
            Effect::Close(reason) | Effect::Reset(reason) => Some(Step::Closed(reason.clone())),
            Effect::StartTls => panic!("STARTTLS accepted without TLS"),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .collect()
}

/// Checks one reply's text; returns its code.
fn reply_code(text: &str) -> Result<u16, TestCaseError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut code = None;
    for (i, line) in lines.iter().enumerate() {
        let bytes = line.as_bytes();
        prop_assert!(
            bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit),
            "reply line without a code: {line:?} in {text:?}"
        );
        prop_assert!(
            (b'2'..=b'5').contains(&bytes[0]),
            "reply code out of range: {line:?}"
        );
        prop_assert!(!line.contains('\r'), "CR inside a reply line: {line:?}");
        let this: u16 = line[..3].parse().expect("three digits");
        prop_assert!(
            code.is_none_or(|c| c == this),
            "codes differ in one reply: {text:?}"
        );
        code = Some(this);
        let last = i + 1 == lines.len();
        let sep = bytes.get(3).copied();
        if last {
            prop_assert!(
                matches!(sep, None | Some(b' ')),
                "last reply line without space: {line:?}"
            );
        } else {
            prop_assert_eq!(sep, Some(b'-'), "continuation line without '-': {:?}", line);
        }
    }
    Ok(code.expect("split yields a line"))
}

/// Splits what the client read into replies (lines joined with `\n`), checking the framing.
fn wire_replies(wire: &[u8]) -> Result<Vec<String>, TestCaseError> {
    let text = String::from_utf8(wire.to_vec())
        .map_err(|_| TestCaseError::fail(format!("reply bytes not UTF-8: {wire:?}")))?;
    prop_assert!(
        text.is_empty() || text.ends_with("\r\n"),
        "the wire does not end with CRLF: {text:?}"
    );
    let mut replies = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.split_terminator("\r\n") {
        prop_assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare CR or LF on the wire: {line:?}"
        );
        current.push(line);
        if line.as_bytes().get(3) != Some(&b'-') {
            replies.push(current.join("\n"));
            current.clear();
        }
    }
    prop_assert!(
        current.is_empty(),
        "unfinished reply on the wire: {current:?}"
    );
    for reply in &replies {
        reply_code(reply)?;
    }
    Ok(replies)
}

/// What the checker knows of the session; `None` when an unreadable line (not UTF-8, so the
/// log does not show exactly what the server parsed) left it unsure.
#[derive(Debug, Clone, Copy)]
struct Model {
    greeted: Option<bool>,
    /// A MAIL succeeded and the transaction is open.
    mail: Option<bool>,
    /// Recipients accepted in the open transaction.
    rcpts: Option<usize>,
}

impl Model {
    fn reset(&mut self) {
        self.mail = Some(false);
        self.rcpts = Some(0);
    }

    fn unknown(&mut self) {
        self.greeted = None;
        self.mail = None;
        self.rcpts = None;
    }
}

/// What a session amounted to.
#[derive(Debug, Default)]
struct Summary {
    /// Messages stored (each followed by its `250`).
    accepted: usize,
    /// Sizes of the stored messages, in order.
    sizes: Vec<usize>,
    /// Whether a `221` was sent.
    quit: bool,
}

/// What a command line was, as far as the log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Over the length limit.
    TooLong,
    /// Not valid UTF-8 on the wire: the log shows it with U+FFFD, so it cannot be parsed again.
    Unsure,
    /// `smtp_proto` (as used by the server) rejects it.
    Invalid,
    Hello,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Vrfy,
    Quit,
    /// A command the grammar knows and this server does not offer.
    Other,
}

fn kind(line: &str) -> Kind {
    if line.ends_with(" bytes]") && line.contains("... [line too long: ") {
        return Kind::TooLong;
    }
    if line.contains('\u{FFFD}') {
        return Kind::Unsure;
    }
    // The server parses the line plus CRLF.
    let wire = format!("{line}\r\n").into_bytes();
    match Request::parse(&mut wire.iter()) {
        Err(_) => Kind::Invalid,
        Ok(Request::Ehlo { .. } | Request::Helo { .. }) => Kind::Hello,
        Ok(Request::Mail { .. }) => Kind::Mail,
        Ok(Request::Rcpt { .. }) => Kind::Rcpt,
        Ok(Request::Data) => Kind::Data,
        Ok(Request::Rset) => Kind::Rset,
        Ok(Request::Noop { .. }) => Kind::Noop,
        Ok(Request::Vrfy { .. }) => Kind::Vrfy,
        Ok(Request::Quit) => Kind::Quit,
        Ok(_) => Kind::Other,
    }
}

/// Checks a session's transcript against the rules of the module doc. `closed`: the session
/// must have ended (network sessions do; a fed state machine may not have).
fn check(steps: &[Step], max_recipients: usize, closed: bool) -> Result<Summary, TestCaseError> {
    let mut summary = Summary::default();
    let mut model = Model {
        greeted: Some(false),
        mail: Some(false),
        rcpts: Some(0),
    };
    for step in steps {
        if let Step::Reply(text) = step {
            reply_code(text)?;
        }
    }
    if closed {
        prop_assert!(
            matches!(steps.last(), Some(Step::Closed(_))),
            "not closed: {steps:?}"
        );
    }
    let mut rest = steps;
    let mut next = || -> Option<&Step> {
        let (first, tail) = rest.split_first()?;
        rest = tail;
        Some(first)
    };

    // The greeting.
    let greeting = match next() {
        Some(Step::Reply(text)) => reply_code(text)?,
        None => return Ok(summary),
        Some(other) => return Err(TestCaseError::fail(format!("no greeting: {other:?}"))),
    };
    if greeting / 100 == 4 {
        let step = next();
        prop_assert!(
            matches!(step, Some(Step::Closed(reason)) if reason == &format!("greeting {greeting}")),
            "a {greeting} greeting is not followed by the close: {step:?}"
        );
        prop_assert!(next().is_none(), "steps after the close: {steps:?}");
        return Ok(summary);
    }
    let refusing = greeting / 100 == 5;

    while let Some(step) = next() {
        let line = match step {
            Step::Command(line) => line,
            Step::Closed(_) => {
                prop_assert!(next().is_none(), "steps after the close: {steps:?}");
                return Ok(summary);
            }
            Step::Reply(text) => {
                // Only the idle timeout speaks unasked.
                prop_assert!(
                    text.starts_with("421 "),
                    "a reply without a command: {text:?} in {steps:?}"
                );
                continue;
            }
            Step::Accepted { .. } => {
                return Err(TestCaseError::fail(format!(
                    "a message stored outside DATA: {steps:?}"
                )))
            }
        };
        let reply = match next() {
            Some(Step::Reply(text)) => text,
            other => {
                return Err(TestCaseError::fail(format!(
                    "command {line:?} not answered at once but by {other:?}"
                )))
            }
        };
        let code = reply_code(reply)?;
        let positive = (200..300).contains(&code);
        let context = format!("C: {line:?} S: {reply:?}, model {model:?}");
        let kind = kind(line);

        if kind == Kind::TooLong {
            prop_assert_eq!(code, 500, "{}", context);
        } else if refusing {
            match kind {
                Kind::Quit => prop_assert_eq!(code, 221, "{}", context),
                Kind::Unsure => prop_assert!(code == 503 || code == 221, "{}", context),
                _ => prop_assert_eq!(code, 503, "{}", context),
            }
        } else {
            match kind {
                Kind::TooLong => unreachable!(),
                Kind::Invalid => prop_assert!(matches!(code, 500 | 501 | 555), "{}", context),
                Kind::Hello => {
                    if positive {
                        model.greeted = Some(true);
                        model.reset();
                    }
                }
                Kind::Mail => {
                    if model.greeted == Some(false) || model.mail == Some(true) {
                        prop_assert_eq!(code, 503, "{}", context);
                    }
                    if positive {
                        model.mail = Some(true);
                        model.rcpts = Some(0);
                    }
                }
                Kind::Rcpt => {
                    if model.mail == Some(false) {
                        prop_assert_eq!(code, 503, "RCPT without MAIL: {}", context);
                    }
                    if positive {
                        if let Some(n) = model.rcpts {
                            prop_assert!(n < max_recipients, "too many: {}", context);
                        }
                        model.rcpts = model.rcpts.map(|n| n + 1);
                    } else if code == 452 {
                        prop_assert!(
                            model.rcpts.is_none_or(|n| n >= max_recipients),
                            "{}",
                            context
                        );
                    }
                }
                Kind::Data => {
                    if model.mail == Some(false) || model.rcpts == Some(0) {
                        prop_assert_eq!(code, 503, "{}", context);
                    }
                }
                Kind::Rset => {
                    prop_assert_eq!(code, 250, "{}", context);
                    model.reset();
                }
                Kind::Noop => prop_assert_eq!(code, 250, "{}", context),
                Kind::Vrfy => prop_assert_eq!(code, 252, "{}", context),
                Kind::Quit => prop_assert_eq!(code, 221, "{}", context),
                Kind::Other => prop_assert_eq!(code, 502, "{}", context),
                Kind::Unsure => {
                    // Learn what the command was from the (distinctive) reply.
                    if reply == "250 2.1.0 Ok" {
                        prop_assert!(model.mail != Some(true), "{}", context);
                        model.mail = Some(true);
                        model.rcpts = Some(0);
                    } else if reply == "250 2.1.5 Ok" {
                        prop_assert!(model.mail != Some(false), "{}", context);
                        model.rcpts = model.rcpts.map(|n| n + 1);
                    } else if positive {
                        model.unknown();
                    }
                }
            }
        }

        match code {
            221 => {
                summary.quit = true;
                let step = next();
                prop_assert!(
                    matches!(step, Some(Step::Closed(reason)) if reason == "quit")
                        || (step.is_none() && !closed),
                    "221 not followed by the close: {step:?} in {steps:?}"
                );
                prop_assert!(next().is_none(), "steps after 221: {steps:?}");
                return Ok(summary);
            }
            354 => {
                prop_assert!(
                    !refusing && model.mail != Some(false) && model.rcpts != Some(0),
                    "354 without a transaction: {}",
                    context
                );
                // The DATA phase: no command lines until the final reply.
                match next() {
                    None | Some(Step::Closed(_)) => {
                        prop_assert!(next().is_none(), "steps after the close: {steps:?}");
                        return Ok(summary);
                    }
                    Some(Step::Accepted { recipients, size }) => {
                        if let Some(n) = model.rcpts {
                            prop_assert_eq!(*recipients, n, "recipients of the stored message");
                        }
                        let after = next();
                        // 250 (a scripted end-of-data reply may be any 2xx).
                        prop_assert!(
                            matches!(after, Some(Step::Reply(r)) if r.starts_with('2')),
                            "a stored message not followed by its 2xx: {after:?}"
                        );
                        summary.accepted += 1;
                        summary.sizes.push(*size);
                    }
                    Some(Step::Reply(text)) => {
                        let end = reply_code(text)?;
                        prop_assert!(
                            !(200..300).contains(&end),
                            "a 2xx after DATA without storing: {text:?}"
                        );
                    }
                    Some(Step::Command(line)) => {
                        return Err(TestCaseError::fail(format!(
                            "a command line in the DATA phase: {line:?}"
                        )))
                    }
                }
                model.reset();
            }
            _ => {}
        }
    }
    prop_assert!(!closed, "the transcript ends without a close");
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// A piece of random input for the byte-level test.
fn noise_piece() -> impl Strategy<Value = Vec<u8>> {
    let crlf_heavy = select(b"\r\n\r\n\r\n\r\n..  :<>@\x00\xff\xc3AZaz09=".to_vec());
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..512),
        3 => proptest::collection::vec(crlf_heavy, 0..512),
        // Over-long lines, around the limit and far over it, ended by CRLF, LF or nothing.
        1 => (2040usize..2060, select(vec![&b"\r\n"[..], b"\n", b""]))
            .prop_map(|(n, end)| [vec![b'A'; n], end.to_vec()].concat()),
        1 => (2060usize..70_000, select(vec![&b"\r\n"[..], b"\n", b"\r"]))
            .prop_map(|(n, end)| [vec![b'x'; n], end.to_vec()].concat()),
        1 => (1usize..300).prop_map(|n| vec![0u8; n]),
        1 => proptest::collection::vec(128u8..=255, 0..300),
        // Plausible lines, so the input gets into (and out of) transactions and DATA.
        4 => select(vec![
            &b"EHLO client.test\r\n"[..],
            b"HELO client.test\n",
            b"MAIL FROM:<a@sender.test>\r\n",
            b"RCPT TO:<b@example.test>\r\n",
            b"DATA\r\n",
            b".\r\n",
            b"\r\n.\r\n",
            b"RSET\r\n",
            b"QUIT\r\n",
            b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

/// Random input: pieces glued together, often after a valid envelope (so the noise is
/// message content until an end-of-data line turns up).
fn noise() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::bool::weighted(0.3),
        proptest::collection::vec(noise_piece(), 1..10),
    )
        .prop_map(|(envelope, pieces)| {
            let mut bytes = Vec::new();
            if envelope {
                bytes.extend_from_slice(
                    b"EHLO c\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
                );
            }
            bytes.extend(pieces.concat());
            bytes
        })
}

/// How the input is cut into writes: sizes used in turn, and whether to pause after each.
fn chunking() -> impl Strategy<Value = Vec<(usize, bool)>> {
    proptest::collection::vec(
        (
            prop_oneof![1usize..8, 8usize..512, 512usize..8192],
            proptest::bool::weighted(0.2),
        ),
        1..12,
    )
}

/// At most this many writes per case (the rest goes in one last write), and at most this
/// many pauses, so a large input in tiny chunks stays fast.
const MAX_CHUNKS: usize = 256;
const MAX_PAUSES: usize = 32;

/// Cuts `bytes` per `chunking`.
fn cut<'a>(bytes: &'a [u8], chunking: &[(usize, bool)]) -> Vec<(&'a [u8], bool)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunking.iter().cycle();
    let mut pauses = 0;
    while !rest.is_empty() {
        let &(size, pause) = sizes.next().expect("chunking is not empty");
        let size = if out.len() + 1 == MAX_CHUNKS {
            rest.len()
        } else {
            size.min(rest.len())
        };
        let (chunk, tail) = rest.split_at(size);
        let pause = pause && pauses < MAX_PAUSES;
        pauses += usize::from(pause);
        out.push((chunk, pause));
        rest = tail;
    }
    out
}

/// One plausible client command.
#[derive(Debug, Clone)]
enum Command {
    Ehlo(&'static str),
    Helo(&'static str),
    Mail(&'static str, &'static str),
    Rcpt(&'static str, &'static str),
    /// DATA, the content lines (dot-stuffed on the way), the end line.
    Data(Vec<String>),
    /// DATA and this many bytes of content (around the size limit), then the end line.
    BigData(usize),
    /// Lines on their own that matter in or out of DATA.
    Raw(&'static str),
    Rset,
    Noop,
    Vrfy,
    Quit,
    StartTls,
    Garbage(Vec<u8>),
}

impl Command {
    /// The bytes a client sends; `lf` ends the command line with a bare LF.
    fn render(&self, lf: bool, out: &mut Vec<u8>) {
        let end: &[u8] = if lf { b"\n" } else { b"\r\n" };
        let line = |text: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(text);
            out.extend_from_slice(end);
        };
        match self {
            Command::Ehlo(host) => line(format!("EHLO {host}").as_bytes(), out),
            Command::Helo(host) => line(format!("helo {host}").as_bytes(), out),
            Command::Mail(path, params) => {
                line(format!("MAIL FROM:{path}{params}").as_bytes(), out)
            }
            Command::Rcpt(path, params) => line(format!("RCPT TO:{path}{params}").as_bytes(), out),
            Command::Data(lines) => {
                line(b"DATA", out);
                for text in lines {
                    if text.starts_with('.') {
                        out.push(b'.');
                    }
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            Command::BigData(size) => {
                line(b"DATA", out);
                for _ in 0..size / 100 {
                    out.extend_from_slice(&[b'z'; 98]);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            Command::Raw(text) => out.extend_from_slice(text.as_bytes()),
            Command::Rset => line(b"RSET", out),
            Command::Noop => line(b"NOOP", out),
            Command::Vrfy => line(b"VRFY bob", out),
            Command::Quit => line(b"QUIT", out),
            Command::StartTls => line(b"STARTTLS", out),
            Command::Garbage(bytes) => line(bytes, out),
        }
    }
}

/// Well-formed paths (one of them refused by a scripted rule in some behaviours).
const GOOD_PATHS: &[&str] = &[
    "<alice@sender.test>",
    "<bob@example.test>",
    "<bad@example.test>",
    "<\"quoted local\"@example.test>",
    "<@relay.test:route@example.test>",
];

/// Paths that are empty, malformed or unusual.
const ODD_PATHS: &[&str] = &[
    "<>",
    "<@bad>",
    "carol@example.test",
    "<unterminated@example.test",
    " <spaced@example.test>",
    "<a@b@c>",
];

const MAIL_PARAMS: &[&str] = &[
    " SIZE=100",
    " SIZE=999999999",
    " BODY=8BITMIME",
    " BODY=BINARYMIME",
    " SMTPUTF8",
    " RET=HDRS ENVID=x",
    " FOO=1",
    " SIZE=abc",
];

const RCPT_PARAMS: &[&str] = &[" NOTIFY=NEVER", " ORCPT=rfc822;b@example.test", " X=Y"];

/// A path, mostly well-formed.
fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => select(GOOD_PATHS), 1 => select(ODD_PATHS)]
}

/// ESMTP parameters, mostly none.
fn params(all: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(""), 1 => select(all)]
}

/// A line of message content.
fn content_line() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[ -~]{0,60}",
        1 => Just(".".to_string()),
        1 => Just("..leading dots".to_string()),
        1 => Just("MAIL FROM:<smuggled@evil.test>".to_string()),
        1 => Just("QUIT".to_string()),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => select(vec!["client.test", "[127.0.0.1]", "", "two words", "x"]).prop_map(Command::Ehlo),
        1 => select(vec!["client.test", ""]).prop_map(Command::Helo),
        4 => (path(), params(MAIL_PARAMS)).prop_map(|(p, q)| Command::Mail(p, q)),
        5 => (path(), params(RCPT_PARAMS)).prop_map(|(p, q)| Command::Rcpt(p, q)),
        3 => proptest::collection::vec(content_line(), 0..8).prop_map(Command::Data),
        1 => (3900usize..4300).prop_map(Command::BigData),
        2 => select(vec![
            "DATA\r\n",
            ".\r\n",
            "\r\n",
            "x\n.\nstill data?\r\n",
            "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
        ])
        .prop_map(Command::Raw),
        2 => Just(Command::Rset),
        1 => Just(Command::Noop),
        1 => Just(Command::Vrfy),
        1 => Just(Command::Quit),
        1 => Just(Command::StartTls),
        2 => proptest::collection::vec(
            select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ :<>@=\x00\xe9\r".to_vec()),
            0..40
        )
        .prop_map(Command::Garbage),
    ]
}

/// A whole transaction as a client would send it: MAIL, one to four RCPTs, DATA and content.
fn transaction() -> impl Strategy<Value = Vec<Command>> {
    (
        select(GOOD_PATHS),
        params(MAIL_PARAMS),
        proptest::collection::vec((select(GOOD_PATHS), params(RCPT_PARAMS)), 1..5),
        proptest::collection::vec(content_line(), 0..8),
    )
        .prop_map(|(from, mail_params, rcpts, content)| {
            let mut commands = vec![Command::Mail(from, mail_params)];
            commands.extend(rcpts.into_iter().map(|(to, p)| Command::Rcpt(to, p)));
            commands.push(Command::Data(content));
            commands
        })
}

/// A command sequence rendered to bytes (a few lines end with a bare LF): usually EHLO first,
/// then single commands and whole transactions.
fn conversation() -> impl Strategy<Value = (Vec<Command>, Vec<u8>)> {
    let block = prop_oneof![
        3 => command().prop_map(|c| vec![c]),
        2 => transaction(),
    ];
    (
        proptest::bool::weighted(0.8),
        proptest::collection::vec(block, 0..10),
        proptest::collection::vec(proptest::bool::weighted(0.05), 64),
    )
        .prop_map(|(ehlo, blocks, lfs)| {
            let mut commands = Vec::new();
            if ehlo {
                commands.push(Command::Ehlo("client.test"));
            }
            commands.extend(blocks.into_iter().flatten());
            let mut bytes = Vec::new();
            for (command, lf) in commands.iter().zip(lfs.iter().cycle()) {
                command.render(*lf, &mut bytes);
            }
            (commands, bytes)
        })
}

// ---------------------------------------------------------------------------------------------
// Driving a real server.

/// Sends `chunks` on a new connection while reading everything the server sends; half-closes
/// after the last chunk and returns the bytes read once the server closes.
async fn converse(addr: SocketAddr, chunks: &[(&[u8], bool)]) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut wire = Vec::new();
        read.read_to_end(&mut wire).await.map(|_| wire)
    });
    for (chunk, pause) in chunks {
        // After a close (221, 421) the server only drains: writes may then fail.
        if write.write_all(chunk).await.is_err() {
            break;
        }
        if *pause {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = write.shutdown().await;
    reader.await.expect("reader task")
}

/// Reads one reply (lines joined with `\n`).
async fn read_reply(stream: &mut BufReader<TcpStream>) -> Result<String, TestCaseError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
        prop_assert!(n > 0, "closed while reading a reply; so far {lines:?}");
        let line = line.trim_end_matches("\r\n").to_string();
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Ok(lines.join("\n"));
        }
    }
}

/// A complete, well-formed transaction in lockstep on a new connection: proves the server
/// still serves.
async fn fresh_transaction(addr: SocketAddr) -> Result<(), TestCaseError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| TestCaseError::fail(format!("connect after the case: {e}")))?;
    let mut stream = BufReader::new(stream);
    let greeting = read_reply(&mut stream).await?;
    prop_assert!(greeting.starts_with("220 "), "{greeting}");
    let steps: [(&[u8], &str); 6] = [
        (b"EHLO client.test\r\n", "250"),
        (b"MAIL FROM:<alice@sender.test>\r\n", "250 2.1.0"),
        (b"RCPT TO:<bob@example.test>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354 "),
        (
            b"Subject: after the fuzz\r\n\r\nstill alive\r\n.\r\n",
            "250 2.0.0 Ok: queued",
        ),
        (b"QUIT\r\n", "221 "),
    ];
    for (send, want) in steps {
        stream
            .get_mut()
            .write_all(send)
            .await
            .map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
        let reply = read_reply(&mut stream).await?;
        prop_assert!(
            reply.starts_with(want),
            "{:?} got {reply:?}",
            String::from_utf8_lossy(send)
        );
    }
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    prop_assert!(rest.is_empty(), "bytes after 221: {rest:?}");
    Ok(())
}

/// The behaviour of the network cases: normal, or refusing one recipient.
fn network_behaviour(refuse_one: bool) -> ListenerBehaviour {
    let normal = ListenerBehaviour::normal(HOSTNAME);
    if refuse_one {
        ListenerBehaviour {
            rules: vec![StageRule::for_recipient(
                "bad@example.test",
                StageAction::Reply("550 5.1.1 No such user".into()),
            )],
            ..normal
        }
    } else {
        normal
    }
}

/// Runs one network case: starts a server, has one session send `input` cut by `chunking`,
/// checks it, then checks the server still serves.
async fn network_case(
    input: &[u8],
    chunking: &[(usize, bool)],
    behaviour: ListenerBehaviour,
) -> Result<(), TestCaseError> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = socket.local_addr().expect("local address");
    let log = EventLog::new();
    let mx = MxBuilder::new("mx1", HOSTNAME, log.clone())
        .listeners(vec![Listener {
            socket,
            family: crate::family::Family::Ipv4,
            behaviour,
        }])
        .limits(limits())
        .try_start()
        .expect("start the server");

    let wire = converse(addr, &cut(input, chunking))
        .await
        .map_err(|e| TestCaseError::fail(format!("client i/o: {e}")))?;
    let closed = |events: &[Event], n: usize| {
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::SmtpClosed { .. }))
            .count()
            >= n
    };
    prop_assert!(
        log.wait_until(CASE_TIME, |events| closed(events, 1)).await,
        "no SmtpClosed for the fuzzed session"
    );
    let steps = steps_from_log(&log.snapshot(), 1)?;
    let summary = check(&steps, limits().max_recipients, true)?;

    // The wire carries exactly the logged replies, well-formed, and nothing after a 221.
    let on_wire = wire_replies(&wire)?;
    let logged: Vec<&String> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Reply(text) => Some(text),
            _ => None,
        })
        .collect();
    prop_assert_eq!(on_wire.iter().collect::<Vec<_>>(), logged);
    if let Some(quit) = on_wire.iter().position(|r| r.starts_with("221 ")) {
        prop_assert_eq!(quit + 1, on_wire.len(), "replies after 221");
    }

    // Stored exactly what the transcript accepted.
    let stored = mx.messages();
    prop_assert_eq!(stored.len(), summary.accepted);
    for (message, size) in stored.iter().zip(&summary.sizes) {
        prop_assert_eq!(message.content.len(), *size);
        let digest: String = Sha256::digest(&message.content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        prop_assert_eq!(&message.digest, &digest);
    }

    // Alive: a fresh transaction is served and stored.
    fresh_transaction(addr).await?;
    prop_assert!(
        log.wait_until(CASE_TIME, |events| closed(events, 2)).await,
        "no SmtpClosed for the fresh session"
    );
    let fresh = steps_from_log(&log.snapshot(), 2)?;
    let fresh_summary = check(&fresh, limits().max_recipients, true)?;
    prop_assert_eq!(fresh_summary.accepted, 1);
    prop_assert_eq!(mx.messages().len(), summary.accepted + 1);
    mx.shutdown().await;
    Ok(())
}

/// Runs `case` on the shared runtime, failing it if it takes longer than [`CASE_TIME`] (twice:
/// the fuzzed session and the fresh one each get that long).
fn run_bounded(
    case: impl std::future::Future<Output = Result<(), TestCaseError>>,
) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        match tokio::time::timeout(CASE_TIME * 2, case).await {
            Ok(result) => result,
            Err(_) => Err(TestCaseError::fail("the case hung")),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Driving the state machine directly.

/// Behaviours for the state-machine cases.
fn machine_behaviour(which: u8) -> ListenerBehaviour {
    let normal = ListenerBehaviour::normal(HOSTNAME);
    let say = |stage, text: &str| StageRule::new(stage, StageAction::Reply(text.into()));
    match which {
        0 => ListenerBehaviour {
            greeting: "554 5.3.2 No service".into(),
            ..normal
        },
        1 => ListenerBehaviour {
            greeting: "421 4.3.2 Try later".into(),
            ..normal
        },
        2 => ListenerBehaviour {
            rules: vec![say(SmtpStage::Mail, "550 5.7.1 Sender refused")],
            ..normal
        },
        3 => ListenerBehaviour {
            rules: vec![StageRule::for_recipient(
                "bad@example.test",
                StageAction::Reply("450 4.2.0 Mailbox busy".into()),
            )],
            ..normal
        },
        4 => ListenerBehaviour {
            rules: vec![say(SmtpStage::EndOfData, "554 5.7.1 Content rejected")],
            ..normal
        },
        5 => ListenerBehaviour {
            extensions: Extensions {
                pipelining: false,
                eightbitmime: false,
                size: false,
                starttls: false,
                enhancedstatuscodes: false,
                dsn: false,
                smtputf8: false,
            },
            ..normal
        },
        6 => ListenerBehaviour {
            extensions: Extensions {
                dsn: true,
                ..Extensions::default()
            },
            ..normal
        },
        _ => normal,
    }
}

/// Feeds `bytes` to a fresh state machine in the given pieces; returns all effects.
fn feed(behaviour: &Arc<ListenerBehaviour>, pieces: &[(&[u8], bool)]) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut session = Session::start(7, HOSTNAME, behaviour.clone(), limits(), &mut effects);
    for (piece, _) in pieces {
        session.input(piece, &mut effects);
    }
    assert_eq!(
        session.is_closed(),
        effects.iter().any(|e| matches!(e, Effect::Close(_))),
        "is_closed disagrees with the effects"
    );
    effects
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    /// Random bytes never break a real server.
    #[test]
    fn random_bytes_over_tcp(input in noise(), chunking in chunking(), rule in any::<bool>()) {
        let behaviour = network_behaviour(rule);
        run_bounded(network_case(&input, &chunking, behaviour))?;
    }

    /// Random command sequences over TCP follow the SMTP rules.
    #[test]
    fn random_commands_over_tcp(
        (_commands, bytes) in conversation(),
        chunking in chunking(),
        rule in any::<bool>(),
    ) {
        let behaviour = network_behaviour(rule);
        run_bounded(network_case(&bytes, &chunking, behaviour))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The state machine alone: the same rules under many behaviours, and the effects do not
    /// depend on how the input is cut.
    #[test]
    fn random_commands_in_the_state_machine(
        (_commands, mut bytes) in conversation(),
        noise in proptest::option::weighted(0.2, noise()),
        chunking in chunking(),
        which in 0u8..8,
    ) {
        if let Some(noise) = noise {
            bytes.extend_from_slice(&noise);
        }
        let behaviour = Arc::new(machine_behaviour(which));
        let whole = feed(&behaviour, &[(&bytes, false)]);
        let pieces = feed(&behaviour, &cut(&bytes, &chunking));
        prop_assert_eq!(&whole, &pieces, "effects depend on the chunking");
        let steps = steps_from_effects(&whole);
        check(&steps, limits().max_recipients, false)?;
        // The reply texts a client would see are well-formed on the wire too.
        let mut wire = Vec::new();
        for effect in &whole {
            if let Effect::Reply(reply) | Effect::Trickle(reply, _) = effect {
                reply.write_to(&mut wire);
            }
        }
        wire_replies(&wire)?;
    }
}

#[test]
fn the_checker_catches_a_phantom_rcpt() {
    // A transcript where RCPT after a refused MAIL got 250 must fail the check.
    let steps = vec![
        Step::Reply("220 mx1.example.test ESMTP mxlab".into()),
        Step::Command("EHLO c".into()),
        Step::Reply("250 mx1.example.test".into()),
        Step::Command("MAIL FROM:<a@b>".into()),
        Step::Reply("550 5.7.1 Sender refused".into()),
        Step::Command("RCPT TO:<c@d>".into()),
        Step::Reply("250 2.1.5 Ok".into()),
        Step::Closed("client closed".into()),
    ];
    assert!(check(&steps, 3, true).is_err());
    // A stored message without its 250, and a reply after 221, too.
    let stored = vec![
        Step::Reply("220 x".into()),
        Step::Command("HELO c".into()),
        Step::Reply("250 x".into()),
        Step::Command("MAIL FROM:<a@b>".into()),
        Step::Reply("250 2.1.0 Ok".into()),
        Step::Command("RCPT TO:<c@d>".into()),
        Step::Reply("250 2.1.5 Ok".into()),
        Step::Command("DATA".into()),
        Step::Reply("354 go".into()),
        Step::Accepted {
            recipients: 1,
            size: 3,
        },
        Step::Reply("554 no".into()),
        Step::Closed("client closed".into()),
    ];
    assert!(check(&stored, 3, true).is_err());
    let after_quit = vec![
        Step::Reply("220 x".into()),
        Step::Command("QUIT".into()),
        Step::Reply("221 bye".into()),
        Step::Command("NOOP".into()),
        Step::Reply("250 2.0.0 Ok".into()),
        Step::Closed("quit".into()),
    ];
    assert!(check(&after_quit, 3, true).is_err());
    assert!(wire_replies(b"250-a\r\n251 b\r\n").is_err());
    assert!(wire_replies(b"250 a\n").is_err());
    assert!(wire_replies(b"25 a\r\n").is_err());
    assert_eq!(
        wire_replies(b"250-a\r\n250 b\r\n221 x\r\n").unwrap(),
        vec!["250-a\n250 b", "221 x"]
    );
    // Reply framing as the server writes it.
    let mut wire = Vec::new();
    Reply::new(250, &["a", "b"]).write_to(&mut wire);
    assert_eq!(wire_replies(&wire).unwrap(), vec!["250-a\n250 b"]);
}
