//! An SMTP reply as the event log records it, parsed once: code, enhanced status, text.

use std::fmt;

use thiserror::Error;

/// A reply line that is not `DDD`, `DDD text` or `DDD-text` with a code from 200 to 599.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed SMTP reply line {line:?}")]
pub struct MalformedReply {
    /// The offending line.
    pub line: String,
}

/// An SMTP reply (RFC 5321 §4.2): one code, an optional RFC 3463 enhanced status code and the
/// text of every line. Multi-line replies are recorded with their lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit reply code, e.g. `550`.
    pub code: u16,
    /// The enhanced status code of the first line, e.g. `5.7.1`, when its class matches the
    /// reply code's.
    pub enhanced: Option<String>,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// Parses a reply as recorded: lines joined by `\n` (a trailing CR or LF is ignored).
    /// Every line must carry the same code.
    pub fn parse(reply: &str) -> Result<SmtpReply, MalformedReply> {
        let mut code = None;
        let mut lines = Vec::new();
        for line in reply.trim_end_matches(['\r', '\n']).split('\n') {
            let line = line.trim_end_matches('\r');
            let malformed = || MalformedReply {
                line: line.to_string(),
            };
            let digits = line
                .get(..3)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
            let this: u16 = digits.and_then(|d| d.parse().ok()).ok_or_else(malformed)?;
            if !(200..600).contains(&this) || code.is_some_and(|c| c != this) {
                return Err(malformed());
            }
            let text = match line.as_bytes().get(3) {
                None => "",
                Some(b' ' | b'-') => &line[4..],
                Some(_) => return Err(malformed()),
            };
            code = Some(this);
            lines.push(text.to_string());
        }
        let code = code.ok_or_else(|| MalformedReply {
            line: reply.to_string(),
        })?;
        let enhanced = enhanced_status(code, &lines[0]);
        Ok(SmtpReply {
            code,
            enhanced,
            lines,
        })
    }

    /// Whether `reply` parses as a 4xx or 5xx reply.
    pub fn is_error_text(reply: &str) -> bool {
        SmtpReply::parse(reply).is_ok_and(|r| r.is_error())
    }

    /// A 4xx reply: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// A 5xx reply: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// A 4xx or 5xx reply.
    pub fn is_error(&self) -> bool {
        self.is_transient() || self.is_permanent()
    }

    /// The first line, as `550 text`, followed by ` …` when more lines follow.
    pub fn headline(&self) -> String {
        let mut text = self.code.to_string();
        if !self.lines[0].is_empty() {
            text.push(' ');
            text.push_str(&self.lines[0]);
        }
        if self.lines.len() > 1 {
            text.push_str(" …");
        }
        text
    }
}

/// The reply as recorded: `DDD-text` lines, then `DDD text`, joined by `\n`.
impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len() - 1;
        for (index, text) in self.lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.code)?;
            if index != last || !text.is_empty() {
                write!(f, "{separator}{text}")?;
            }
        }
        Ok(())
    }
}

/// The RFC 3463 `class.subject.detail` token starting `text`, if its class is the code's.
fn enhanced_status(code: u16, text: &str) -> Option<String> {
    let token = text.split_whitespace().next()?;
    let parts: Vec<&str> = token.split('.').collect();
    let class = (code / 100).to_string();
    let well_formed = parts.len() == 3
        && parts[0] == class
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    well_formed.then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_line_reply_gives_code_status_and_text() {
        let reply = SmtpReply::parse("550 5.7.1 Relay denied").unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced.as_deref(), Some("5.7.1"));
        assert_eq!(reply.lines, ["5.7.1 Relay denied"]);
        assert!(reply.is_permanent() && reply.is_error() && !reply.is_transient());
        assert_eq!(reply.headline(), "550 5.7.1 Relay denied");
        assert_eq!(reply.to_string(), "550 5.7.1 Relay denied");
    }

    #[test]
    fn a_multiline_reply_keeps_every_line() {
        let recorded = "451-4.3.0 busy\n451-try later\n451 4.3.0 really";
        let reply = SmtpReply::parse(recorded).unwrap();
        assert_eq!(reply.code, 451);
        assert_eq!(reply.enhanced.as_deref(), Some("4.3.0"));
        assert_eq!(reply.lines, ["4.3.0 busy", "try later", "4.3.0 really"]);
        assert!(reply.is_transient());
        assert_eq!(reply.headline(), "451 4.3.0 busy …");
        assert_eq!(reply.to_string(), recorded);
    }

    #[test]
    fn a_bare_code_and_a_status_of_another_class() {
        let bare = SmtpReply::parse("250").unwrap();
        assert_eq!((bare.code, bare.enhanced.clone()), (250, None));
        assert_eq!(bare.headline(), "250");
        assert_eq!(bare.to_string(), "250");
        let mismatched = SmtpReply::parse("550 4.2.0 odd").unwrap();
        assert_eq!(mismatched.enhanced, None);
        assert_eq!(
            SmtpReply::parse("250 2.0.0 Ok\r\n").unwrap().lines,
            ["2.0.0 Ok"]
        );
    }

    #[test]
    fn malformed_replies_are_refused() {
        for text in [
            "",
            "25",
            "abc text",
            "2500 text",
            "250x",
            "150 below 200",
            "650 above 599",
            "250-first\n251 other code",
            "scripted reset after storing mxlab-1-1",
        ] {
            assert!(SmtpReply::parse(text).is_err(), "{text:?}");
            assert!(!SmtpReply::is_error_text(text), "{text:?}");
        }
        assert!(SmtpReply::is_error_text("421 4.3.2 busy"));
        assert!(!SmtpReply::is_error_text("250 Ok"));
    }
}
