//! The SMTP state machine of one session, free of I/O.
//!
//! Bytes go in ([`Session::input`]); [`Effect`]s come out in the order they happen: command
//! lines to log, replies to send (and log), accepted messages, the STARTTLS upgrade, and the
//! decision to close. The connection driver (`mx::conn`) applies them. Keeping the machine
//! pure makes its rules testable byte by byte and guarantees pipelined commands are answered
//! one by one, in order.
//!
//! Command lines are framed here ([`LineReader`], with the line-length limit) and each complete
//! line is handed to `smtp_proto::Request::parse`, which knows the RFC 5321 grammar (paths,
//! quoted local parts, ESMTP parameters). The transaction rules are ours: a RCPT is only
//! accepted after a *successful* MAIL, so a pipelining client whose MAIL was refused cannot
//! produce a phantom delivery.
//!
//! Scripted behaviour ([`StageRule`](super::StageRule)s) is applied after a command has passed
//! the sequence and syntax checks: the rule's action replaces what the server would otherwise
//! do at that stage.

use std::borrow::Cow;
use std::sync::Arc;

use smtp_proto::{Error as ParseError, MailFrom, RcptTo, Request};

use super::behaviour::{Cut, ListenerBehaviour, StageAction};
use super::data::{self, DataEnd, DataReader};
use super::line::{Line, LineReader};
use super::policy::{Answer, Gate, Lookup, Verdict};
use super::reply::Reply;
use super::stage::SmtpStage;
use super::Limits;
use crate::events::SessionId;

/// Something the connection driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Log a command line the client sent.
    Command(String),
    /// Send (and log) a reply.
    Reply(Reply),
    /// Send (and log) a reply, trickled at this many bytes per second.
    Trickle(Reply, u32),
    /// Store (and log) an accepted message. Always precedes its `250` reply.
    Accepted(Accepted),
    /// Once the replies so far are sent, run the TLS handshake, then call
    /// [`Session::tls_started`]. Input up to then is discarded (RFC 3207 §4.2).
    StartTls,
    /// Close the connection once the replies so far are sent; the reason is for the log.
    Close(String),
    /// Abort the connection with a TCP reset once the replies so far are sent (no FIN, no
    /// drain); the reason is for the log.
    Reset(String),
    /// Log a policy decision (see [`super::policy`]); it precedes the reply it leads to.
    Policy(String),
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
    /// The HELO/EHLO name of the session.
    pub(crate) helo: String,
}

/// What the session expects next.
#[derive(Debug)]
enum Mode {
    /// Command lines.
    Command,
    /// Message content after `354`, and how many more content bytes pass before a
    /// [`SmtpStage::Content`] rule acts (`None`: no such rule).
    Data(DataReader, Option<usize>),
    /// A rule stalled the session at this stage: lines are logged, never answered.
    Stalled(SmtpStage),
    /// STARTTLS was accepted: input until the handshake is discarded (counted here).
    TlsPending(usize),
    /// A policy needs `lookup` answered ([`Session::resume`]) before `line` can be decided;
    /// input meanwhile is `held`.
    Waiting {
        lookup: Lookup,
        line: Vec<u8>,
        held: Vec<u8>,
    },
    /// Nothing: the session is over, further input is ignored.
    Closed,
}

/// What a stage's rule leaves for the command handler to do.
enum Staged {
    /// Nothing: the rule stalled or closed the session.
    Done,
    /// Send this scripted reply (and apply what its code means).
    Scripted(Reply),
    /// Behave normally, trickling the replies at this rate if it is `Some`.
    Normal(Option<u32>),
}

/// One SMTP session's state.
#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    hostname: String,
    behaviour: Arc<ListenerBehaviour>,
    limits: Limits,
    mode: Mode,
    lines: LineReader,
    /// The greeting was 5xx: everything but QUIT gets 503 (RFC 5321 §3.1).
    refusing: bool,
    /// Whether HELO or EHLO succeeded.
    greeted: bool,
    /// Whether the session runs over TLS.
    tls: bool,
    /// The reverse path of the transaction in progress, set only by a *successful* MAIL.
    from: Option<String>,
    /// Accepted recipients of the transaction in progress.
    to: Vec<String>,
    /// Messages accepted so far in this session.
    accepted: u32,
    /// The listener's policies for this connection, if it has any.
    gate: Option<Gate>,
    /// The last HELO/EHLO name (for SPF).
    helo: String,
    /// The sender of the MAIL command being decided (for policies).
    mail_candidate: Option<String>,
    /// The command line being decided (kept only with policies, to decide it again).
    last_line: Vec<u8>,
    /// A scripted `421` was just sent: close once the command is done (RFC 5321 §3.8).
    closing: Option<SmtpStage>,
}

/// Whether a reply is 2xx (positive completion).
fn positive(reply: &Reply) -> bool {
    reply.code().is_some_and(|c| (200..300).contains(&c))
}

/// Turns the replies in `effects[mark..]` into trickled ones if `pace` is set.
fn pace_since(effects: &mut [Effect], mark: usize, pace: Option<u32>) {
    let Some(rate) = pace else { return };
    for effect in &mut effects[mark..] {
        if let Effect::Reply(reply) = effect {
            *effect = Effect::Trickle(reply.clone(), rate);
        }
    }
}

/// `text` without a leading enhanced status code (`2.1.0 `), if it has one.
fn strip_enhanced(text: &str) -> &str {
    let Some((code, rest)) = text.split_once(' ') else {
        return text;
    };
    let parts: Vec<&str> = code.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) {
        rest
    } else {
        text
    }
}

/// The wire length of one reply line with `text`: `250-` + text + CRLF.
fn wire_len(text: &str) -> usize {
    text.len() + 6
}

/// Shortest padding line: `250-X-MXLAB-PAD-` CRLF.
const PAD_MIN: usize = 18;
/// Longest padding line on the wire.
const PAD_MAX: usize = 80;

/// Padding lines bringing a reply of `have` wire bytes to at least `want` (less than
/// [`PAD_MIN`] more).
fn padding(have: usize, want: usize) -> Vec<String> {
    let mut remaining = want.saturating_sub(have);
    let mut lines = Vec::new();
    while remaining > 0 {
        let wire = if remaining <= PAD_MAX {
            remaining.max(PAD_MIN)
        } else if remaining - PAD_MAX < PAD_MIN {
            remaining - PAD_MIN
        } else {
            PAD_MAX
        };
        lines.push(format!("X-MXLAB-PAD-{}", "x".repeat(wire - PAD_MIN)));
        remaining = remaining.saturating_sub(wire);
    }
    lines
}

impl Session {
    /// Starts a session: the greeting goes out (and, for a 4xx greeting, the close), unless a
    /// greeting rule stalls or disconnects.
    #[cfg_attr(not(test), allow(dead_code))] // the server uses `start_gated`
    pub(crate) fn start(
        id: SessionId,
        hostname: &str,
        behaviour: Arc<ListenerBehaviour>,
        limits: Limits,
        effects: &mut Vec<Effect>,
    ) -> Self {
        Self::start_gated(id, hostname, behaviour, limits, None, effects)
    }

    /// [`Session::start`] with the connection's policies. A lookup needed at the greeting
    /// must already be answered ([`Gate::greeting_lookup`]).
    pub(crate) fn start_gated(
        id: SessionId,
        hostname: &str,
        behaviour: Arc<ListenerBehaviour>,
        limits: Limits,
        gate: Option<Gate>,
        effects: &mut Vec<Effect>,
    ) -> Self {
        let mut session = Self {
            id,
            hostname: hostname.to_string(),
            lines: LineReader::new(limits.max_line),
            behaviour,
            limits,
            mode: Mode::Command,
            refusing: false,
            greeted: false,
            tls: false,
            from: None,
            to: Vec::new(),
            accepted: 0,
            gate,
            helo: String::new(),
            mail_candidate: None,
            last_line: Vec::new(),
            closing: None,
        };
        let mark = effects.len();
        let (greeting, pace) = match session.rule(SmtpStage::Greeting, None, effects) {
            Staged::Done => return session,
            Staged::Scripted(reply) => (reply, None),
            Staged::Normal(pace) => (Reply::verbatim(&session.behaviour.greeting), pace),
        };
        let code = greeting.code();
        effects.push(Effect::Reply(greeting));
        match code.map(|c| c / 100) {
            Some(4) => session.close(format!("greeting {}", code.unwrap_or(0)), effects),
            Some(5) => session.refusing = true,
            _ => {}
        }
        pace_since(effects, mark, pace);
        session
    }

    /// Whether the session is receiving message content.
    pub(crate) fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(..))
    }

    /// Whether the session has decided to close.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts afresh (RFC 3207 §4.2:
    /// the client must EHLO again; no transaction). Returns how many bytes the client sent
    /// between STARTTLS and the handshake (discarded).
    pub(crate) fn tls_started(&mut self) -> usize {
        let discarded = match self.mode {
            Mode::TlsPending(n) => n,
            _ => 0,
        };
        self.mode = Mode::Command;
        self.lines = LineReader::new(self.limits.max_line);
        self.greeted = false;
        self.tls = true;
        self.reset_transaction();
        discarded
    }

    /// The reply for an idle timeout, and the close. A stalled session closes silently.
    pub(crate) fn timeout(&mut self, effects: &mut Vec<Effect>) {
        match self.mode {
            Mode::Closed => {}
            Mode::Stalled(stage) => self.close(format!("timeout (stalled at {stage})"), effects),
            _ => {
                self.reply(
                    effects,
                    421,
                    format!("4.4.2 {} Error: timeout exceeded", self.hostname),
                );
                self.close("timeout".to_string(), effects);
            }
        }
    }

    /// Consumes everything the client sent, producing effects.
    pub(crate) fn input(&mut self, mut bytes: &[u8], effects: &mut Vec<Effect>) {
        while !bytes.is_empty() {
            match &mut self.mode {
                Mode::Closed => return,
                Mode::TlsPending(discarded) => {
                    *discarded += bytes.len();
                    return;
                }
                Mode::Waiting { held, .. } => {
                    held.extend_from_slice(bytes);
                    return;
                }
                Mode::Data(reader, cut) => {
                    let allowed = cut.map_or(bytes.len(), |left| left.min(bytes.len()));
                    let (used, end) = reader.push(&bytes[..allowed]);
                    bytes = &bytes[used..];
                    if let Some(left) = cut {
                        *left -= used;
                    }
                    if let Some(end) = end {
                        self.mode = Mode::Command;
                        self.end_of_data(end, effects);
                    } else if *cut == Some(0) {
                        self.cut_content(effects);
                    }
                }
                Mode::Command | Mode::Stalled(_) => {
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

    fn reset(&mut self, reason: String, effects: &mut Vec<Effect>) {
        self.mode = Mode::Closed;
        effects.push(Effect::Reset(reason));
    }

    /// Enters the DATA phase, with the content rule's byte budget if there is one.
    fn start_data(&mut self) {
        let cut = self.behaviour.content_cut().map(|(after, _)| after);
        self.mode = Mode::Data(DataReader::new(self.limits.max_message), cut);
    }

    /// The content rule's byte budget is used up: it acts in the middle of the content.
    fn cut_content(&mut self, effects: &mut Vec<Effect>) {
        let behaviour = self.behaviour.clone();
        let Some((after_bytes, action)) = behaviour.content_cut() else {
            return;
        };
        let stage = SmtpStage::Content { after_bytes };
        self.reset_transaction();
        match action {
            StageAction::Reset => self.reset(format!("scripted reset at {stage}"), effects),
            StageAction::Stall => self.mode = Mode::Stalled(stage),
            _ => self.close(format!("scripted disconnect at {stage}"), effects),
        }
    }

    /// Closes after a scripted `421` once the command that drew it is answered.
    fn close_if_421(&mut self, effects: &mut Vec<Effect>) {
        if let Some(stage) = self.closing.take() {
            if !self.is_closed() {
                self.close(format!("scripted 421 at {stage}"), effects);
            }
        }
    }

    /// A reply of the server's own; without its enhanced code if ENHANCEDSTATUSCODES is off.
    fn reply(&self, effects: &mut Vec<Effect>, code: u16, text: impl AsRef<str>) {
        let text = text.as_ref();
        let text = if self.behaviour.extensions.enhancedstatuscodes {
            text
        } else {
            strip_enhanced(text)
        };
        effects.push(Effect::Reply(Reply::line(code, text)));
    }

    fn reset_transaction(&mut self) {
        self.from = None;
        self.to.clear();
    }

    /// Applies the rule for `stage`, if any: stalls and disconnects happen here; a scripted
    /// reply or the normal behaviour (possibly slow) is left to the caller.
    fn rule(
        &mut self,
        stage: SmtpStage,
        recipient: Option<&str>,
        effects: &mut Vec<Effect>,
    ) -> Staged {
        let behaviour = self.behaviour.clone();
        let action = behaviour.action(stage, recipient);
        if let None | Some(StageAction::Slow { .. }) = action {
            if let Some(staged) = self.policy(stage, recipient, effects) {
                return staged;
            }
        }
        match action {
            None => Staged::Normal(None),
            Some(StageAction::Slow { bytes_per_second }) => {
                Staged::Normal(Some((*bytes_per_second).max(1)))
            }
            Some(StageAction::Reply(text)) => {
                let reply = Reply::verbatim(text);
                if reply.code() == Some(421) && !matches!(stage, SmtpStage::Greeting) {
                    self.closing = Some(stage);
                }
                Staged::Scripted(reply)
            }
            Some(StageAction::Reset) => {
                self.reset(format!("scripted reset at {stage}"), effects);
                Staged::Done
            }
            Some(StageAction::AcceptThen(_)) => Staged::Normal(None),
            Some(StageAction::Stall) => {
                self.mode = Mode::Stalled(stage);
                Staged::Done
            }
            Some(StageAction::Disconnect) => {
                self.close(format!("scripted disconnect at {stage}"), effects);
                Staged::Done
            }
        }
    }

    /// Asks the policies about a command at `stage`; `None` lets the stage go on normally.
    fn policy(
        &mut self,
        stage: SmtpStage,
        recipient: Option<&str>,
        effects: &mut Vec<Effect>,
    ) -> Option<Staged> {
        let gate = self.gate.as_mut()?;
        let sender = match stage {
            SmtpStage::Mail => self.mail_candidate.as_deref(),
            _ => self.from.as_deref(),
        };
        let mut notes = Vec::new();
        let verdict = gate.decide(stage, &self.helo, sender, recipient, &mut notes);
        effects.extend(notes.into_iter().map(Effect::Policy));
        match verdict {
            Verdict::Pass => None,
            Verdict::Reply(text) => Some(Staged::Scripted(Reply::verbatim(&text))),
            Verdict::Wait(lookup) => {
                self.mode = Mode::Waiting {
                    lookup,
                    line: std::mem::take(&mut self.last_line),
                    held: Vec::new(),
                };
                Some(Staged::Done)
            }
        }
    }

    /// The lookup a policy waits for, if any: answer it with [`Session::resume`].
    pub(crate) fn pending_lookup(&self) -> Option<Lookup> {
        match &self.mode {
            Mode::Waiting { lookup, .. } => Some(lookup.clone()),
            _ => None,
        }
    }

    /// Takes the answer to [`Session::pending_lookup`], decides the waiting command again and
    /// goes on with the input held meanwhile.
    pub(crate) fn resume(&mut self, answer: Answer, effects: &mut Vec<Effect>) {
        let Mode::Waiting { line, held, .. } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        if let Some(gate) = self.gate.as_mut() {
            gate.store(answer);
        }
        self.run(line, effects);
        self.input(&held, effects);
    }

    /// Parses and carries out one complete command line (without CRLF).
    fn run(&mut self, line: Vec<u8>, effects: &mut Vec<Effect>) {
        if self.gate.is_some() {
            self.last_line.clone_from(&line);
        }
        let mut wire = line;
        wire.extend_from_slice(b"\r\n");
        let request = Request::parse(&mut wire.iter());
        self.command(request, effects);
        self.close_if_421(effects);
    }

    fn line(&mut self, line: Line, effects: &mut Vec<Effect>) {
        match line {
            Line::TooLong { len, prefix } => {
                effects.push(Effect::Command(format!(
                    "{}... [line too long: {len} bytes]",
                    String::from_utf8_lossy(&prefix)
                )));
                if !matches!(self.mode, Mode::Stalled(_)) {
                    self.reply(effects, 500, "5.5.2 Error: line too long");
                }
            }
            Line::Complete(line) => {
                effects.push(Effect::Command(String::from_utf8_lossy(&line).into_owned()));
                if matches!(self.mode, Mode::Stalled(_)) {
                    return;
                }
                self.run(line, effects);
            }
        }
    }

    /// The EHLO reply: hostname, padding, then the enabled extensions.
    fn ehlo_reply(&self) -> Reply {
        let ext = &self.behaviour.extensions;
        let size = format!("SIZE {}", self.limits.max_message);
        let starttls = self.behaviour.offers_starttls() && !self.tls;
        let keywords: Vec<&str> = [
            (ext.pipelining, "PIPELINING"),
            (ext.eightbitmime, "8BITMIME"),
            (ext.size, size.as_str()),
            (starttls, "STARTTLS"),
            (ext.enhancedstatuscodes, "ENHANCEDSTATUSCODES"),
            (ext.dsn, "DSN"),
            (ext.smtputf8, "SMTPUTF8"),
        ]
        .into_iter()
        .filter_map(|(on, keyword)| on.then_some(keyword))
        .collect();
        let pad = match self.behaviour.ehlo_pad_to {
            Some(want) => {
                let have =
                    wire_len(&self.hostname) + keywords.iter().map(|k| wire_len(k)).sum::<usize>();
                padding(have, want)
            }
            None => Vec::new(),
        };
        let texts: Vec<&str> = std::iter::once(self.hostname.as_str())
            .chain(pad.iter().map(String::as_str))
            .chain(keywords)
            .collect();
        Reply::new(250, &texts)
    }

    /// A MAIL parameter this server does not offer (its extension is off), if any.
    fn unsupported_mail_parameter(&self, from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
        let ext = &self.behaviour.extensions;
        if !ext.eightbitmime && from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            Some("BODY=8BITMIME")
        } else if !ext.size && from.size > 0 {
            Some("SIZE")
        } else if !ext.smtputf8 && from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            Some("SMTPUTF8")
        } else if !ext.dsn
            && (from.flags & (smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS) != 0
                || from.env_id.is_some())
        {
            Some("RET/ENVID")
        } else {
            None
        }
    }

    /// A RCPT parameter this server does not offer, if any.
    fn unsupported_rcpt_parameter(&self, to: &RcptTo<Cow<'_, str>>) -> Option<&'static str> {
        let notify = smtp_proto::RCPT_NOTIFY_SUCCESS
            | smtp_proto::RCPT_NOTIFY_FAILURE
            | smtp_proto::RCPT_NOTIFY_DELAY
            | smtp_proto::RCPT_NOTIFY_NEVER;
        let dsn = to.flags & notify != 0 || to.orcpt.is_some();
        (!self.behaviour.extensions.dsn && dsn).then_some("NOTIFY/ORCPT")
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
        let mark = effects.len();
        match request {
            Request::Ehlo { host } => match self.greeting_rule(SmtpStage::Ehlo, &host, effects) {
                Staged::Done => {}
                Staged::Scripted(reply) => self.greeted_by(reply, effects),
                Staged::Normal(pace) => {
                    self.greeted_by(self.ehlo_reply(), effects);
                    pace_since(effects, mark, pace);
                }
            },
            Request::Helo { host } => match self.greeting_rule(SmtpStage::Helo, &host, effects) {
                Staged::Done => {}
                Staged::Scripted(reply) => self.greeted_by(reply, effects),
                Staged::Normal(pace) => {
                    self.greeted_by(Reply::line(250, &self.hostname), effects);
                    pace_since(effects, mark, pace);
                }
            },
            Request::Mail { from } => {
                if !self.greeted {
                    self.reply(effects, 503, "5.5.1 Error: send HELO/EHLO first");
                } else if self.from.is_some() {
                    self.reply(effects, 503, "5.5.1 Error: nested MAIL command");
                } else if let Some(param) = self.unsupported_mail_parameter(&from) {
                    self.reply(effects, 555, format!("5.5.4 Unsupported parameter {param}"));
                } else {
                    self.mail_candidate = Some(from.address.to_string());
                    match self.rule(SmtpStage::Mail, None, effects) {
                        Staged::Done => {}
                        Staged::Scripted(reply) => {
                            if positive(&reply) {
                                self.from = Some(from.address.into_owned());
                            }
                            effects.push(Effect::Reply(reply));
                        }
                        Staged::Normal(pace) => {
                            if from.size > self.limits.max_message {
                                self.reply(effects, 552, "5.3.4 Message size exceeds fixed limit");
                            } else {
                                self.from = Some(from.address.into_owned());
                                self.reply(effects, 250, "2.1.0 Ok");
                            }
                            pace_since(effects, mark, pace);
                        }
                    }
                }
            }
            Request::Rcpt { to } => {
                if self.from.is_none() {
                    self.reply(effects, 503, "5.5.1 Error: need MAIL command");
                } else if to.address.is_empty() {
                    self.reply(effects, 501, "5.1.3 Bad recipient address syntax");
                } else if let Some(param) = self.unsupported_rcpt_parameter(&to) {
                    self.reply(effects, 555, format!("5.5.4 Unsupported parameter {param}"));
                } else {
                    match self.rule(SmtpStage::Rcpt, Some(&to.address), effects) {
                        Staged::Done => {}
                        Staged::Scripted(reply) => {
                            if positive(&reply) {
                                self.to.push(to.address.into_owned());
                            }
                            effects.push(Effect::Reply(reply));
                        }
                        Staged::Normal(pace) => {
                            if self.to.len() >= self.limits.max_recipients {
                                self.reply(effects, 452, "4.5.3 Error: too many recipients");
                            } else {
                                self.to.push(to.address.into_owned());
                                self.reply(effects, 250, "2.1.5 Ok");
                            }
                            pace_since(effects, mark, pace);
                        }
                    }
                }
            }
            Request::Data => {
                if self.from.is_none() {
                    self.reply(effects, 503, "5.5.1 Error: need MAIL command");
                } else if self.to.is_empty() {
                    self.reply(effects, 503, "5.5.1 Error: need RCPT command");
                } else {
                    match self.rule(SmtpStage::Data, None, effects) {
                        Staged::Done => {}
                        Staged::Scripted(reply) => {
                            let go = reply.code().is_some_and(|c| (300..400).contains(&c));
                            effects.push(Effect::Reply(reply));
                            if go {
                                self.start_data();
                            }
                        }
                        Staged::Normal(pace) => {
                            self.reply(effects, 354, "End data with <CR><LF>.<CR><LF>");
                            self.start_data();
                            pace_since(effects, mark, pace);
                        }
                    }
                }
            }
            Request::StartTls if self.behaviour.offers_starttls() => {
                if self.tls {
                    self.reply(effects, 503, "5.5.1 Error: TLS already active");
                } else if self.from.is_some() {
                    self.reply(effects, 503, "5.5.1 Error: MAIL transaction in progress");
                } else {
                    match self.rule(SmtpStage::StartTls, None, effects) {
                        Staged::Done => {}
                        Staged::Scripted(reply) => {
                            let go = positive(&reply);
                            effects.push(Effect::Reply(reply));
                            if go {
                                self.start_tls(effects);
                            }
                        }
                        Staged::Normal(pace) => {
                            self.reply(effects, 220, "2.0.0 Ready to start TLS");
                            pace_since(effects, mark, pace);
                            self.start_tls(effects);
                        }
                    }
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
            Request::Quit => match self.rule(SmtpStage::Quit, None, effects) {
                Staged::Done => {}
                Staged::Scripted(reply) => {
                    effects.push(Effect::Reply(reply));
                    self.close("quit".to_string(), effects);
                }
                Staged::Normal(pace) => {
                    self.reply(effects, 221, "2.0.0 Bye");
                    pace_since(effects, mark, pace);
                    self.close("quit".to_string(), effects);
                }
            },
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

    /// [`Session::rule`] for HELO/EHLO, noting the name given.
    fn greeting_rule(&mut self, stage: SmtpStage, host: &str, effects: &mut Vec<Effect>) -> Staged {
        self.helo = host.to_string();
        self.rule(stage, None, effects)
    }

    /// Sends the reply to HELO/EHLO; a 2xx one greets (and resets the transaction).
    fn greeted_by(&mut self, reply: Reply, effects: &mut Vec<Effect>) {
        if positive(&reply) {
            self.greeted = true;
            self.reset_transaction();
        }
        effects.push(Effect::Reply(reply));
    }

    fn start_tls(&mut self, effects: &mut Vec<Effect>) {
        effects.push(Effect::StartTls);
        self.mode = Mode::TlsPending(0);
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
        let mark = effects.len();
        let lost = match self.behaviour.action(SmtpStage::EndOfData, None) {
            Some(StageAction::AcceptThen(cut)) => Some(*cut),
            _ => None,
        };
        let pace = match self.rule(SmtpStage::EndOfData, None, effects) {
            Staged::Done => return,
            Staged::Scripted(reply) => {
                if let (true, DataEnd::Complete { content, digest }) = (positive(&reply), end) {
                    self.store(from, to, content, digest, effects);
                }
                effects.push(Effect::Reply(reply));
                self.close_if_421(effects);
                return;
            }
            Staged::Normal(pace) => pace,
        };
        match end {
            DataEnd::TooBig { .. } => {
                self.reply(effects, 552, "5.3.4 Error: message file too big");
            }
            DataEnd::Complete { content, digest } => {
                let queue_id = self.store(from, to, content, digest, effects);
                match lost {
                    None => self.reply(effects, 250, format!("2.0.0 Ok: queued as {queue_id}")),
                    Some(cut) => {
                        let reason = format!("scripted {cut} after storing {queue_id}");
                        match cut {
                            Cut::Reset => self.reset(reason, effects),
                            Cut::Disconnect => self.close(reason, effects),
                            Cut::Stall => self.mode = Mode::Stalled(SmtpStage::EndOfData),
                        }
                    }
                }
            }
        }
        pace_since(effects, mark, pace);
    }

    /// Stores an accepted message (the `Accepted` effect); returns its queue id.
    fn store(
        &mut self,
        from: String,
        to: Vec<String>,
        content: Vec<u8>,
        digest: String,
        effects: &mut Vec<Effect>,
    ) -> String {
        self.accepted += 1;
        let queue_id = format!("mxlab-{}-{}", self.id, self.accepted);
        effects.push(Effect::Accepted(Accepted {
            from,
            to,
            digest,
            message_id: data::message_id(&content),
            content,
            queue_id: queue_id.clone(),
            helo: self.helo.clone(),
        }));
        queue_id
    }
}

#[cfg(test)]
mod tests {
    use super::super::behaviour::{Extensions, StageRule};
    use super::super::tls::TlsMode;
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_message: 100,
            max_recipients: 2,
            ..Limits::default()
        }
    }

    fn start(greeting: &str) -> (Session, Vec<Effect>) {
        let mut behaviour = ListenerBehaviour::normal("mx1.example.test");
        behaviour.greeting = greeting.to_string();
        start_with(behaviour)
    }

    fn start_with(behaviour: ListenerBehaviour) -> (Session, Vec<Effect>) {
        let mut effects = Vec::new();
        let session = Session::start(
            7,
            "mx1.example.test",
            Arc::new(behaviour),
            limits(),
            &mut effects,
        );
        (session, effects)
    }

    fn with_rules(rules: Vec<StageRule>) -> ListenerBehaviour {
        ListenerBehaviour {
            rules,
            ..ListenerBehaviour::normal("mx1.example.test")
        }
    }

    /// Feeds `input` and returns the reply texts (first line of each) it produced.
    fn replies(session: &mut Session, input: &[u8]) -> Vec<String> {
        let mut effects = Vec::new();
        session.input(input, &mut effects);
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply(r) | Effect::Trickle(r, _) => {
                    Some(r.log_text().lines().last().unwrap_or("").to_string())
                }
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
                other => format!("{other:?}"),
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
        // Seeded, so a failure is reproducible.
        let mut draws = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let alphabet: &[u8] = b"\r\n\r\n.<>:@ \"\\MAILFROMRCPTODATAEHLO=\x00\xff\xc3";
        for round in 0..300 {
            let (mut s, _) = start("220 x");
            let mut effects = Vec::new();
            for _ in 0..20 {
                let len = draws.usize(..300);
                let chunk: Vec<u8> = (0..len)
                    .map(|_| match round % 2 {
                        0 => alphabet[draws.usize(..alphabet.len())],
                        _ => draws.u8(..),
                    })
                    .collect();
                s.input(&chunk, &mut effects);
            }
        }
    }

    fn reply_texts(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply(r) | Effect::Trickle(r, _) => Some(r.log_text()),
                _ => None,
            })
            .collect()
    }

    fn accepted(effects: &[Effect]) -> Vec<&Accepted> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Accepted(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn reply(stage: SmtpStage, text: &str) -> StageRule {
        StageRule::new(stage, StageAction::Reply(text.to_string()))
    }

    #[test]
    fn a_scripted_rcpt_reply_can_hit_one_recipient_only() {
        let (mut s, _) = start_with(with_rules(vec![StageRule::for_recipient(
            "Temp@D.test",
            StageAction::Reply("451 4.7.1 Try again later".into()),
        )]));
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<temp@d.test>\r\nRCPT TO:<ok@d.test>\r\nDATA\r\nx\r\n.\r\n",
            &mut effects,
        );
        let texts = reply_texts(&effects);
        assert_eq!(texts[2], "451 4.7.1 Try again later");
        assert_eq!(texts[3], "250 2.1.5 Ok");
        assert_eq!(accepted(&effects)[0].to, vec!["ok@d.test".to_string()]);
    }

    #[test]
    fn a_scripted_mail_rejection_makes_rcpt_a_bad_sequence() {
        let (mut s, _) = start_with(with_rules(vec![reply(
            SmtpStage::Mail,
            "550 5.7.1 Sender refused",
        )]));
        assert_eq!(
            codes(
                &mut s,
                b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
            ),
            vec![250, 550, 503, 503]
        );
    }

    #[test]
    fn a_refused_data_keeps_the_transaction_and_a_refused_end_of_data_stores_nothing() {
        let (mut s, _) = start_with(with_rules(vec![reply(
            SmtpStage::Data,
            "451 4.3.0 Not now",
        )]));
        assert_eq!(
            codes(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nMAIL FROM:<a@b>\r\nRCPT TO:<e@d>\r\n"),
            vec![250, 250, 250, 451, 503, 250]
        );

        let (mut s, _) = start_with(with_rules(vec![reply(
            SmtpStage::EndOfData,
            "554 5.7.1 Content rejected\n",
        )]));
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nRCPT TO:<c@d>\r\n",
            &mut effects,
        );
        assert!(accepted(&effects).is_empty());
        let texts = reply_texts(&effects);
        assert_eq!(texts[4], "554 5.7.1 Content rejected\n");
        assert_eq!(&texts[5][..3], "503");

        // A scripted 2xx at end of data does store.
        let (mut s, _) = start_with(with_rules(vec![reply(SmtpStage::EndOfData, "250 fine")]));
        let mut effects = Vec::new();
        s.input(
            b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n",
            &mut effects,
        );
        assert_eq!(accepted(&effects).len(), 1);
        assert_eq!(reply_texts(&effects).last().unwrap(), "250 fine");
    }

    #[test]
    fn stalls_say_nothing_and_time_out_silently() {
        let (mut s, _) = start_with(with_rules(vec![StageRule::new(
            SmtpStage::Rcpt,
            StageAction::Stall,
        )]));
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nQUIT\r\n",
            &mut effects,
        );
        assert_eq!(reply_texts(&effects).len(), 2);
        assert!(matches!(effects.last(), Some(Effect::Command(c)) if c == "QUIT"));
        assert!(!s.is_closed());
        let mut effects = Vec::new();
        s.timeout(&mut effects);
        assert_eq!(
            effects,
            vec![Effect::Close("timeout (stalled at RCPT)".into())]
        );

        let (s, effects) = start_with(with_rules(vec![StageRule::new(
            SmtpStage::Greeting,
            StageAction::Stall,
        )]));
        assert!(effects.is_empty() && !s.is_closed());
    }

    #[test]
    fn disconnects_close_without_a_reply() {
        let (mut s, _) = start_with(with_rules(vec![StageRule::new(
            SmtpStage::Mail,
            StageAction::Disconnect,
        )]));
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
            &mut effects,
        );
        assert_eq!(reply_texts(&effects).len(), 1);
        assert_eq!(
            effects.last(),
            Some(&Effect::Close("scripted disconnect at MAIL".into()))
        );
        assert!(s.is_closed());

        let (s, effects) = start_with(with_rules(vec![StageRule::new(
            SmtpStage::EndOfData,
            StageAction::Disconnect,
        )]));
        drop(effects);
        let mut s = s;
        let mut effects = Vec::new();
        s.input(
            b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n",
            &mut effects,
        );
        assert!(accepted(&effects).is_empty());
        assert!(s.is_closed());
    }

    const TRANSACTION: &[u8] =
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nMessage-ID: <m@b>\r\n\r\nx\r\n.\r\n";

    #[test]
    fn a_lost_reply_after_the_dot_stores_the_message_first() {
        for (cut, last) in [
            (
                Cut::Reset,
                Some(Effect::Reset(
                    "scripted reset after storing mxlab-7-1".into(),
                )),
            ),
            (
                Cut::Disconnect,
                Some(Effect::Close(
                    "scripted disconnect after storing mxlab-7-1".into(),
                )),
            ),
            (Cut::Stall, None),
        ] {
            let (mut s, _) = start_with(with_rules(vec![StageRule::new(
                SmtpStage::EndOfData,
                StageAction::AcceptThen(cut),
            )]));
            let mut effects = Vec::new();
            s.input(TRANSACTION, &mut effects);
            let stored = accepted(&effects);
            assert_eq!(stored.len(), 1, "{cut}: the message is stored");
            assert_eq!(stored[0].message_id.as_deref(), Some("<m@b>"));
            // HELO, MAIL, RCPT and DATA are answered; the end of data is not.
            assert_eq!(reply_texts(&effects).len(), 4, "{cut}: {effects:?}");
            assert!(matches!(effects.last(), Some(Effect::Accepted(_))) || last.is_some());
            if let Some(last) = last {
                assert_eq!(effects.last(), Some(&last));
                assert!(s.is_closed());
            } else {
                // Silence: what the client sends next is logged and never answered.
                let mut later = Vec::new();
                s.input(b"QUIT\r\n", &mut later);
                assert_eq!(later, vec![Effect::Command("QUIT".into())]);
                assert!(!s.is_closed());
            }
        }
    }

    #[test]
    fn a_content_rule_cuts_the_data_phase_after_so_many_bytes() {
        let body = format!("Message-ID: <m@b>\r\n\r\n{}\r\n.\r\n", "y".repeat(50));
        for (action, reset) in [(StageAction::Reset, true), (StageAction::Disconnect, false)] {
            let (mut s, _) = start_with(with_rules(vec![StageRule::new(
                SmtpStage::Content { after_bytes: 30 },
                action.clone(),
            )]));
            let mut effects = Vec::new();
            s.input(
                b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                &mut effects,
            );
            // The content arrives in pieces; the cut comes after exactly 30 bytes of it.
            s.input(&body.as_bytes()[..20], &mut effects);
            assert!(s.in_data());
            s.input(&body.as_bytes()[20..], &mut effects);
            assert!(
                accepted(&effects).is_empty(),
                "{action:?}: nothing is stored"
            );
            let reason = "scripted {} at DATA content after 30 bytes";
            let expected = if reset {
                Effect::Reset(reason.replace("{}", "reset"))
            } else {
                Effect::Close(reason.replace("{}", "disconnect"))
            };
            assert_eq!(effects.last(), Some(&expected));
            assert!(s.is_closed());
        }
        // A message shorter than the budget is not cut.
        let (mut s, _) = start_with(with_rules(vec![StageRule::new(
            SmtpStage::Content { after_bytes: 1000 },
            StageAction::Reset,
        )]));
        let mut effects = Vec::new();
        s.input(TRANSACTION, &mut effects);
        assert_eq!(accepted(&effects).len(), 1);
    }

    #[test]
    fn a_scripted_421_closes_after_its_reply() {
        let (mut s, _) = start_with(with_rules(vec![reply(
            SmtpStage::EndOfData,
            "421 4.3.0 shutting down",
        )]));
        let mut effects = Vec::new();
        s.input(TRANSACTION, &mut effects);
        assert!(accepted(&effects).is_empty(), "a 421 stores nothing");
        assert_eq!(
            reply_texts(&effects).last().map(String::as_str),
            Some("421 4.3.0 shutting down")
        );
        assert_eq!(
            effects.last(),
            Some(&Effect::Close("scripted 421 at end of data".into()))
        );
        // A scripted 451 does not close.
        let (mut s, _) = start_with(with_rules(vec![reply(SmtpStage::Rcpt, "451 4.3.0 later")]));
        let mut effects = Vec::new();
        s.input(
            b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
            &mut effects,
        );
        assert!(!s.is_closed());
    }

    #[test]
    fn slow_replies_are_trickled_normal_replies() {
        let (mut s, greeting) = start_with(with_rules(vec![
            StageRule::new(
                SmtpStage::Greeting,
                StageAction::Slow {
                    bytes_per_second: 0,
                },
            ),
            StageRule::new(
                SmtpStage::Quit,
                StageAction::Slow {
                    bytes_per_second: 50,
                },
            ),
        ]));
        assert_eq!(
            greeting,
            vec![Effect::Trickle(
                Reply::verbatim("220 mx1.example.test ESMTP mxlab"),
                1
            )]
        );
        let mut effects = Vec::new();
        s.input(b"QUIT\r\n", &mut effects);
        assert_eq!(
            effects[1],
            Effect::Trickle(Reply::line(221, "2.0.0 Bye"), 50)
        );
        assert_eq!(effects[2], Effect::Close("quit".into()));
    }

    #[test]
    fn extensions_can_be_switched_off() {
        let behaviour = ListenerBehaviour {
            extensions: Extensions {
                pipelining: false,
                eightbitmime: false,
                size: false,
                starttls: true,
                enhancedstatuscodes: false,
                dsn: false,
                smtputf8: false,
            },
            ..ListenerBehaviour::normal("mx1.example.test")
        };
        let (mut s, _) = start_with(behaviour);
        let mut effects = Vec::new();
        s.input(b"EHLO c\r\n", &mut effects);
        assert_eq!(reply_texts(&effects), vec!["250 mx1.example.test"]);
        assert_eq!(
            replies(
                &mut s,
                b"MAIL FROM:<a@b> BODY=8BITMIME\r\nMAIL FROM:<a@b> SIZE=5\r\nMAIL FROM:<a@b> SMTPUTF8\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\n"
            ),
            vec![
                "555 Unsupported parameter BODY=8BITMIME",
                "555 Unsupported parameter SIZE",
                "555 Unsupported parameter SMTPUTF8",
                "250 Ok",
                "555 Unsupported parameter NOTIFY/ORCPT",
            ]
        );

        let behaviour = ListenerBehaviour {
            extensions: Extensions {
                dsn: true,
                ..Extensions::default()
            },
            tls: TlsMode::Valid,
            ..ListenerBehaviour::normal("mx1.example.test")
        };
        let (mut s, _) = start_with(behaviour);
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b> RET=HDRS ENVID=x\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\n",
            &mut effects,
        );
        assert_eq!(
            reply_texts(&effects),
            vec![
                "250-mx1.example.test\n250-PIPELINING\n250-8BITMIME\n250-SIZE 100\n250-STARTTLS\n\
                 250-ENHANCEDSTATUSCODES\n250-DSN\n250 SMTPUTF8",
                "250 2.1.0 Ok",
                "250 2.1.5 Ok"
            ]
        );
    }

    #[test]
    fn the_ehlo_reply_can_be_padded() {
        let base = 105;
        for want in [0, 100, 150, 151, 168, 169, 170, 300, 1000, 4096, 10_000] {
            let (mut s, _) = start_with(ListenerBehaviour {
                ehlo_pad_to: Some(want),
                ..ListenerBehaviour::normal("mx1.example.test")
            });
            let mut effects = Vec::new();
            s.input(b"EHLO c\r\n", &mut effects);
            let Effect::Reply(reply) = &effects[1] else {
                panic!("{effects:?}")
            };
            let mut wire = Vec::new();
            reply.write_to(&mut wire);
            assert!(
                wire.len() >= want && wire.len() < want.max(base) + PAD_MIN,
                "{want}: {}",
                wire.len()
            );
            assert!(reply.log_text().lines().all(|l| l.len() + 2 <= PAD_MAX));
            assert!(reply.log_text().ends_with("250 SMTPUTF8"));
            if want <= base {
                assert_eq!(wire.len(), base);
            }
        }
    }

    #[test]
    fn starttls_restarts_the_session_and_discards_pipelined_input() {
        let (mut s, _) = start_with(ListenerBehaviour {
            tls: TlsMode::Valid,
            ..ListenerBehaviour::normal("mx1.example.test")
        });
        let mut effects = Vec::new();
        s.input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\nRSET\r\nSTARTTLS\r\nMAIL FROM:<evil@b>\r\n",
            &mut effects,
        );
        let tail: Vec<&Effect> = effects.iter().skip(4).collect();
        assert!(reply_texts(&effects)[2].starts_with("503 5.5.1 Error: MAIL transaction"));
        assert_eq!(
            tail[tail.len() - 2..],
            [
                &Effect::Reply(Reply::line(220, "2.0.0 Ready to start TLS")),
                &Effect::StartTls
            ]
        );
        assert_eq!(s.tls_started(), b"MAIL FROM:<evil@b>\r\n".len());
        // The client must EHLO again, and STARTTLS is no longer offered.
        assert_eq!(codes(&mut s, b"MAIL FROM:<a@b>\r\n"), vec![503]);
        let mut effects = Vec::new();
        s.input(b"EHLO c\r\nSTARTTLS\r\n", &mut effects);
        assert!(!reply_texts(&effects)[0].contains("STARTTLS"));
        assert_eq!(
            reply_texts(&effects)[1],
            "503 5.5.1 Error: TLS already active"
        );

        // A scripted refusal keeps the session in plain text.
        let (mut s, _) = start_with(ListenerBehaviour {
            tls: TlsMode::Valid,
            rules: vec![reply(SmtpStage::StartTls, "454 4.7.0 TLS not available")],
            ..ListenerBehaviour::normal("mx1.example.test")
        });
        assert_eq!(
            codes(&mut s, b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n"),
            vec![250, 454, 250]
        );
    }

    #[test]
    fn enhanced_codes_are_recognised() {
        assert_eq!(strip_enhanced("2.1.0 Ok"), "Ok");
        assert_eq!(strip_enhanced("4.4.2 mx Error"), "mx Error");
        assert_eq!(strip_enhanced("mx1.example.test"), "mx1.example.test");
        assert_eq!(strip_enhanced("1.2 x"), "1.2 x");
        assert_eq!(strip_enhanced("Ok"), "Ok");
    }
}
