//! SMTP replies: a code plus one or more text lines, rendered for the wire and for the event log.

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The text lines; each is a complete wire line without CRLF, e.g. `250-PIPELINING`.
    lines: Vec<String>,
    /// The reply code, if the text starts with three digits (a scripted greeting might not).
    code: Option<u16>,
}

impl Reply {
    /// A reply with `code` and the given texts (one line per text; continuation markers added).
    pub(crate) fn new(code: u16, texts: &[&str]) -> Self {
        let last = texts.len().saturating_sub(1);
        let lines = if texts.is_empty() {
            vec![code.to_string()]
        } else {
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    let sep = if i == last { ' ' } else { '-' };
                    format!("{code}{sep}{text}")
                })
                .collect()
        };
        Self {
            lines,
            code: Some(code),
        }
    }

    /// A single-line reply.
    pub(crate) fn line(code: u16, text: impl AsRef<str>) -> Self {
        Self::new(code, &[text.as_ref()])
    }

    /// A reply taken verbatim from a scenario (e.g. a scripted greeting): `\n` separates wire
    /// lines, which are sent exactly as written (a trailing `\r` on a line is dropped).
    pub(crate) fn verbatim(text: &str) -> Self {
        let lines: Vec<String> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
            .collect();
        let code = lines
            .first()
            .and_then(|l| l.get(..3))
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse().ok());
        Self { lines, code }
    }

    /// The reply code, if it has one.
    pub(crate) fn code(&self) -> Option<u16> {
        self.code
    }

    /// The text for the event log: wire lines joined with `\n`, no final CRLF.
    pub(crate) fn log_text(&self) -> String {
        self.lines.join("\n")
    }

    /// Appends the wire form (every line CRLF-terminated) to `out`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        for line in &self.lines {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_use_continuation_markers() {
        let reply = Reply::new(250, &["mx1.example.test", "PIPELINING", "SMTPUTF8"]);
        assert_eq!(
            reply.log_text(),
            "250-mx1.example.test\n250-PIPELINING\n250 SMTPUTF8"
        );
        let mut wire = Vec::new();
        reply.write_to(&mut wire);
        assert_eq!(
            wire,
            b"250-mx1.example.test\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n"
        );
    }

    #[test]
    fn verbatim_replies_keep_their_text_and_find_the_code() {
        let reply = Reply::verbatim("421 4.3.2 Service not available");
        assert_eq!(reply.code(), Some(421));
        assert_eq!(reply.log_text(), "421 4.3.2 Service not available");
        assert_eq!(Reply::verbatim("hello").code(), None);
        assert_eq!(Reply::verbatim("").code(), None);
    }
}
