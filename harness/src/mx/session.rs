//! The SMTP state machine of one session, free of I/O.
//!
//! Bytes go in ([`Session::input`]); [`Effect`]s come out in the order they happen: command
//! lines to log, replies to send (and log), accepted messages, and the decision to close. The
//! connection driver ([`super::conn`]) applies them. Keeping the machine pure makes its rules
//! testable byte by byte and guarantees pipelined commands are answered one by one, in order.
//!
//! Command lines are framed here ([`LineReader`], with the line-length limit) and each complete
//! line is handed to `smtp_proto::Request::parse`, which knows the RFC 5321 grammar (paths,
//! quoted local parts, ESMTP parameters). The transaction rules are ours: a RCPT is only
//! accepted after a *successful* MAIL, so a pipelining client whose MAIL was refused cannot
//! produce a phantom delivery.

use std::borrow::Cow;

use smtp_proto::{Error as ParseError, Request};

use super::data::{self, DataEnd, DataReader};
use super::line::{Line, LineReader};
use super::reply::Reply;
use super::Limits;
use crate::events::SessionId;

/// Something the connection driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Log a command line the client sent.
    Command(String),
    /// Send (and log) a reply.
    Reply(Reply),
    /// Store (and log) an accepted message. Always precedes its `250` reply.
    Accepted(Accepted),
    /// Close the connection once the replies so far are sent; the reason is for the log.
    Close(String),
}

/// A message accepted at the end of DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Envelope sender (empty for the null sender `<>`).
    pub(crate) from: String,
    /// Envelope recipients.
    pub(crate) to: Vec<String>,
    /// Content after dot-unstuffing.
    pub(crate) content: Vec<u8>,
    /// Hex SHA-256 of `content`.
    pub(crate) digest: String,
    /// The Message-ID header, if any.
    pub(crate) message_id: Option<String>,
    /// The id given in the `250 ... queued as` reply.
    pub(crate) queue_id: String,
}

/// What the session expects next.
#[derive(Debug)]
enum Mode {
    /// Command lines.
    Command,
    /// Message content after `354`.
    Data(DataReader),
    /// Nothing: the session is over, further input is ignored.
    Closed,
}

/// One SMTP session's state.
#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    hostname: String,
    limits: Limits,
    mode: Mode,
    lines: LineReader,
    /// The greeting was 5xx: everything but QUIT gets 503 (RFC 5321 §3.1).
    refusing: bool,
    /// Whether HELO or EHLO succeeded.
    greeted: bool,
    /// The reverse path of the transaction in progress, set only by a *successful* MAIL.
    from: Option<String>,
    /// Accepted recipients of the transaction in progress.
    to: Vec<String>,
    /// Messages accepted so far in this session.
    accepted: u32,
}

impl Session {
    /// Starts a session: the greeting goes out (and, for a 4xx greeting, the close).
    pub(crate) fn start(
        id: SessionId,
        hostname: &str,
        greeting: &str,
        limits: Limits,
        effects: &mut Vec<Effect>,
    ) -> Self {
        let greeting = Reply::verbatim(greeting);
        let code = greeting.code();
        effects.push(Effect::Reply(greeting));
        let mut session = Self {
            id,
            hostname: hostname.to_string(),
            lines: LineReader::new(limits.max_line),
            limits,
            mode: Mode::Command,
            refusing: false,
            greeted: false,
            from: None,
            to: Vec::new(),
            accepted: 0,
        };
        match code.map(|c| c / 100) {
            Some(4) => session.close(format!("greeting {}", code.unwrap_or(0)), effects),
            Some(5) => session.refusing = true,
            _ => {}
        }
        session
    }

    /// Whether the session is receiving message content.
    pub(crate) fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_))
    }

    /// Whether the session has decided to close.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// The reply for an idle timeout, and the close.
    pub(crate) fn timeout(&mut self, effects: &mut Vec<Effect>) {
        if self.is_closed() {
            return;
        }
        self.reply(
            effects,
            421,
            format!("4.4.2 {} Error: timeout exceeded", self.hostname),
        );
        self.close("timeout".to_string(), effects);
    }

    /// Consumes everything the client sent, producing effects.
    pub(crate) fn input(&mut self, mut bytes: &[u8], effects: &mut Vec<Effect>) {
        while !bytes.is_empty() {
            match &mut self.mode {
                Mode::Closed => return,
                Mode::Data(reader) => {
                    let (used, end) = reader.push(bytes);
                    bytes = &bytes[used..];
                    if let Some(end) = end {
                        self.mode = Mode::Command;
                        self.end_of_data(end, effects);
                    }
                }
                Mode::Command => {
                    let (used, line) = self.lines.push(bytes);
                    bytes = &bytes[used..];
                    if let Some(line) = line {
                        self.line(line, effects);
                    }
                }
            }
        }
    }

    fn close(&mut self, reason: String, effects: &mut Vec<Effect>) {
        self.mode = Mode::Closed;
        effects.push(Effect::Close(reason));
    }

    fn reply(&self, effects: &mut Vec<Effect>, code: u16, text: impl AsRef<str>) {
        effects.push(Effect::Reply(Reply::line(code, text)));
    }

    fn reset_transaction(&mut self) {
        self.from = None;
        self.to.clear();
    }

    fn line(&mut self, line: Line, effects: &mut Vec<Effect>) {
        match line {
            Line::TooLong { len, prefix } => {
                effects.push(Effect::Command(format!(
                    "{}... [line too long: {len} bytes]",
                    String::from_utf8_lossy(&prefix)
                )));
                self.reply(effects, 500, "5.5.2 Error: line too long");
            }
            Line::Complete(line) => {
                effects.push(Effect::Command(String::from_utf8_lossy(&line).into_owned()));
                let mut wire = line;
                wire.extend_from_slice(b"\r\n");
                let request = Request::parse(&mut wire.iter());
                self.command(request, effects);
            }
        }
    }

    fn command(
        &mut self,
        request: Result<Request<Cow<'_, str>>, ParseError>,
        effects: &mut Vec<Effect>,
    ) {
        if self.refusing {
            if let Ok(Request::Quit) = request {
                self.reply(effects, 221, "2.0.0 Bye");
                self.close("quit".to_string(), effects);
            } else {
                self.reply(effects, 503, "5.5.1 Error: bad sequence of commands");
            }
            return;
        }
        let request = match request {
            Ok(request) => request,
            Err(error) => return self.parse_error(error, effects),
        };
        match request {
            Request::Ehlo { .. } => {
                self.greeted = true;
                self.reset_transaction();
                let size = format!("SIZE {}", self.limits.max_message);
                effects.push(Effect::Reply(Reply::new(
                    250,
                    &[
                        &self.hostname,
                        "PIPELINING",
                        "8BITMIME",
                        &size,
                        "ENHANCEDSTATUSCODES",
                        "SMTPUTF8",
                    ],
                )));
            }
            Request::Helo { .. } => {
                self.greeted = true;
                self.reset_transaction();
                self.reply(effects, 250, &self.hostname);
            }
            Request::Mail { from } => {
                if !self.greeted {
                    self.reply(effects, 503, "5.5.1 Error: send HELO/EHLO first");
                } else if self.from.is_some() {
                    self.reply(effects, 503, "5.5.1 Error: nested MAIL command");
                } else if from.size > self.limits.max_message {
                    self.reply(effects, 552, "5.3.4 Message size exceeds fixed limit");
                } else {
                    self.from = Some(from.address.into_owned());
                    self.reply(effects, 250, "2.1.0 Ok");
                }
            }
            Request::Rcpt { to } => {
                if self.from.is_none() {
                    self.reply(effects, 503, "5.5.1 Error: need MAIL command");
                } else if to.address.is_empty() {
                    self.reply(effects, 501, "5.1.3 Bad recipient address syntax");
                } else if self.to.len() >= self.limits.max_recipients {
                    self.reply(effects, 452, "4.5.3 Error: too many recipients");
                } else {
                    self.to.push(to.address.into_owned());
                    self.reply(effects, 250, "2.1.5 Ok");
                }
            }
            Request::Data => {
                if self.from.is_none() {
                    self.reply(effects, 503, "5.5.1 Error: need MAIL command");
                } else if self.to.is_empty() {
                    self.reply(effects, 503, "5.5.1 Error: need RCPT command");
                } else {
                    self.reply(effects, 354, "End data with <CR><LF>.<CR><LF>");
                    self.mode = Mode::Data(DataReader::new(self.limits.max_message));
                }
            }
            Request::Rset => {
                self.reset_transaction();
                self.reply(effects, 250, "2.0.0 Ok");
            }
            Request::Noop { .. } => self.reply(effects, 250, "2.0.0 Ok"),
            Request::Vrfy { .. } => self.reply(
                effects,
                252,
                "2.0.0 Cannot VRFY user; try RCPT to attempt delivery",
            ),
            Request::Quit => {
                self.reply(effects, 221, "2.0.0 Bye");
                self.close("quit".to_string(), effects);
            }
            // Known to the grammar but not offered by this server (not in the EHLO list).
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Help { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::StartTls => self.reply(effects, 502, "5.5.1 Error: command not implemented"),
        }
    }

    fn parse_error(&mut self, error: ParseError, effects: &mut Vec<Effect>) {
        match error {
            ParseError::UnknownCommand
            | ParseError::NeedsMoreData { .. }
            | ParseError::InvalidResponse { .. } => {
                self.reply(effects, 500, "5.5.2 Error: command not recognized")
            }
            ParseError::ResponseTooLong => self.reply(effects, 500, "5.5.2 Error: line too long"),
            ParseError::SyntaxError { syntax } => {
                self.reply(effects, 501, format!("5.5.4 Syntax: {syntax}"))
            }
            ParseError::InvalidSenderAddress => {
                self.reply(effects, 501, "5.1.7 Bad sender address syntax")
            }
            ParseError::InvalidRecipientAddress => {
                self.reply(effects, 501, "5.1.3 Bad recipient address syntax")
            }
            ParseError::InvalidParameter { param } => {
                self.reply(effects, 501, format!("5.5.4 Invalid parameter {param}"))
            }
            ParseError::UnsupportedParameter { param } => {
                self.reply(effects, 555, format!("5.5.4 Unsupported parameter {param}"))
            }
        }
    }

    fn end_of_data(&mut self, end: DataEnd, effects: &mut Vec<Effect>) {
        let from = self.from.take().unwrap_or_default();
        let to = std::mem::take(&mut self.to);
        match end {
            DataEnd::TooBig { .. } => {
                self.reply(effects, 552, "5.3.4 Error: message file too big");
            }
            DataEnd::Complete { content, digest } => {
                self.accepted += 1;
                let queue_id = format!("mxlab-{}-{}", self.id, self.accepted);
                let reply = format!("2.0.0 Ok: queued as {queue_id}");
                effects.push(Effect::Accepted(Accepted {
                    from,
                    to,
                    digest,
                    message_id: data::message_id(&content),
                    content,
                    queue_id,
                }));
                self.reply(effects, 250, reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_message: 100,
            max_recipients: 2,
            ..Limits::default()
        }
    }

    fn start(greeting: &str) -> (Session, Vec<Effect>) {
        let mut effects = Vec::new();
        let session = Session::start(7, "mx1.example.test", greeting, limits(), &mut effects);
        (session, effects)
    }

    /// Feeds `input` and returns the reply texts (first line of each) it produced.
    fn replies(session: &mut Session, input: &[u8]) -> Vec<String> {
        let mut effects = Vec::new();
        session.input(input, &mut effects);
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply(r) => Some(r.log_text().lines().last().unwrap_or("").to_string()),
                _ => None,
            })
            .collect()
    }

    fn codes(session: &mut Session, input: &[u8]) -> Vec<u16> {
        replies(session, input)
            .iter()
            .map(|r| r[..3].parse().unwrap())
            .collect()
    }

    #[test]
    fn a_pipelined_transaction_is_answered_in_order() {
        let (mut s, greeting) = start("220 mx1.example.test ESMTP mxlab");
        assert_eq!(
            greeting,
            vec![Effect::Reply(Reply::verbatim(
                "220 mx1.example.test ESMTP mxlab"
            ))]
        );
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<c@d.test>\r\nDATA\r\n..x\r\n.\r\nQUIT\r\nNOOP\r\n",
            &mut effects,
        );
        let accepted: Vec<&Accepted> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Accepted(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].content, b".x\r\n");
        assert_eq!(accepted[0].from, "a@b.test");
        assert_eq!(accepted[0].to, vec!["c@d.test".to_string()]);
        assert_eq!(accepted[0].queue_id, "mxlab-7-1");
        // The 250 for the message comes right after the Accepted effect, and QUIT closes:
        // the NOOP after it is ignored.
        let tail: Vec<String> = effects
            .iter()
            .skip_while(|e| !matches!(e, Effect::Accepted(_)))
            .map(|e| match e {
                Effect::Accepted(_) => "accepted".to_string(),
                Effect::Reply(r) => r.log_text(),
                Effect::Command(c) => format!("C: {c}"),
                Effect::Close(r) => format!("close {r}"),
            })
            .collect();
        assert_eq!(
            tail,
            vec![
                "accepted",
                "250 2.0.0 Ok: queued as mxlab-7-1",
                "C: QUIT",
                "221 2.0.0 Bye",
                "close quit"
            ]
        );
        assert!(s.is_closed());
    }

    #[test]
    fn ehlo_lists_the_extensions() {
        let (mut s, _) = start("220 x");
        let mut effects = Vec::new();
        s.input(b"EHLO client.test\r\n", &mut effects);
        assert_eq!(
            effects[1],
            Effect::Reply(Reply::new(
                250,
                &[
                    "mx1.example.test",
                    "PIPELINING",
                    "8BITMIME",
                    "SIZE 100",
                    "ENHANCEDSTATUSCODES",
                    "SMTPUTF8"
                ]
            ))
        );
    }

    #[test]
    fn rcpt_after_a_failed_mail_is_a_bad_sequence() {
        let (mut s, _) = start("220 x");
        assert_eq!(
            codes(
                &mut s,
                b"EHLO c\r\nMAIL FROM:<@bad>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n"
            ),
            // DATA is refused, so the content lines are commands: both unknown.
            vec![250, 501, 503, 503, 500, 500]
        );
        assert_eq!(
            codes(&mut s, b"MAIL FROM:<a@b> FOO=1\r\nRCPT TO:<c@d>\r\n"),
            vec![555, 503]
        );
        assert_eq!(
            codes(&mut s, b"MAIL FROM:<a@b> SIZE=101\r\nRCPT TO:<c@d>\r\n"),
            vec![552, 503]
        );
    }

    #[test]
    fn transaction_rules() {
        let (mut s, _) = start("220 x");
        assert_eq!(codes(&mut s, b"MAIL FROM:<a@b>\r\n"), vec![503]);
        assert_eq!(codes(&mut s, b"HELO c\r\nDATA\r\n"), vec![250, 503]);
        assert_eq!(
            codes(
                &mut s,
                b"MAIL FROM:<>\r\nMAIL FROM:<>\r\nDATA\r\nRCPT TO:<>\r\n"
            ),
            vec![250, 503, 503, 501]
        );
        assert_eq!(
            codes(
                &mut s,
                b"RCPT TO:<a@b>\r\nRCPT TO:<b@b>\r\nRCPT TO:<c@b>\r\n"
            ),
            vec![250, 250, 452]
        );
        assert_eq!(codes(&mut s, b"RSET\r\nRCPT TO:<a@b>\r\n"), vec![250, 503]);
        assert_eq!(
            codes(&mut s, b"VRFY bob\r\nNOOP\r\nFOO\r\nSTARTTLS\r\nHELO\r\n"),
            vec![252, 250, 500, 502, 501]
        );
    }

    #[test]
    fn too_big_messages_get_552_and_the_session_goes_on() {
        let (mut s, _) = start("220 x");
        let mut input = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200));
        input.extend_from_slice(b"\r\n.\r\nRCPT TO:<c@d>\r\n");
        assert_eq!(codes(&mut s, &input), vec![250, 250, 250, 354, 552, 503]);
    }

    #[test]
    fn a_4xx_greeting_closes_and_a_5xx_greeting_refuses_until_quit() {
        let (s, effects) = start("421 4.3.2 Service not available");
        assert!(s.is_closed());
        assert_eq!(effects.last(), Some(&Effect::Close("greeting 421".into())));

        let (mut s, _) = start("554 5.3.2 No service");
        assert_eq!(
            codes(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\nbogus\r\nQUIT\r\n"),
            vec![503, 503, 503, 221]
        );
        assert!(s.is_closed());
    }

    #[test]
    fn over_long_lines_get_500_and_the_session_continues() {
        let (mut s, _) = start("220 x");
        let mut input = vec![b'A'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let mut effects = Vec::new();
        s.input(&input, &mut effects);
        assert!(
            matches!(&effects[0], Effect::Command(c) if c.ends_with("[line too long: 5000 bytes]"))
        );
        assert_eq!(codes(&mut s, b"NOOP\r\n"), vec![250]);
        assert_eq!(
            effects[1],
            Effect::Reply(Reply::line(500, "5.5.2 Error: line too long"))
        );
    }

    #[test]
    fn timeouts_answer_421_and_close() {
        let (mut s, _) = start("220 x");
        let mut effects = Vec::new();
        s.timeout(&mut effects);
        assert_eq!(
            effects,
            vec![
                Effect::Reply(Reply::line(
                    421,
                    "4.4.2 mx1.example.test Error: timeout exceeded"
                )),
                Effect::Close("timeout".into())
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator (xorshift) so failures are reproducible.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet: &[u8] = b"\r\n\r\n.<>:@ \"\\MAILFROMRCPTODATAEHLO=\x00\xff\xc3";
        for round in 0..300 {
            let (mut s, _) = start("220 x");
            let mut effects = Vec::new();
            for _ in 0..20 {
                let mut chunk = Vec::new();
                for _ in 0..(x % 300) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.push(if round % 2 == 0 {
                        alphabet[(x % alphabet.len() as u64) as usize]
                    } else {
                        x as u8
                    });
                }
                s.input(&chunk, &mut effects);
            }
        }
    }
}
