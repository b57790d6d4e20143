//! The DATA phase: dot-unstuffing, the end-of-data marker, the size limit, and what the server
//! reads out of an accepted message (digest, Message-ID).
//!
//! Lines of message content end with CRLF only: a bare LF is content, so `LF . LF` does not end
//! the message (the strict reading of RFC 5321 §4.1.1.4, which also avoids SMTP smuggling).
//! A line starting with `.` loses that dot (§4.5.2); the line `.` ends the data. The content is
//! everything before that line, including the CRLF ending the last content line.

use sha2::{Digest, Sha256};

/// Where the reader is relative to line boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a line; the last byte was not CR.
    Mid,
    /// Inside a line; the last byte kept was CR.
    MidCr,
    /// A line started with a dot (not kept yet: it is either stuffing or the end marker).
    Dot,
    /// A line started with dot, CR.
    DotCr,
}

/// How a DATA phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataEnd {
    /// The message, unstuffed.
    Complete {
        /// The content.
        content: Vec<u8>,
        /// Hex SHA-256 of the content (computed as it arrived, not in one go at the end).
        digest: String,
    },
    /// The message was larger than the limit; its content was discarded.
    TooBig {
        /// Its size after unstuffing.
        size: usize,
    },
}

/// Reads message content after `354` until the end-of-data line.
#[derive(Debug)]
pub(crate) struct DataReader {
    state: State,
    content: Vec<u8>,
    size: usize,
    max: usize,
    hasher: Sha256,
}

impl DataReader {
    /// A reader that keeps at most `max` bytes of content.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            state: State::LineStart,
            content: Vec::new(),
            size: 0,
            max,
            hasher: Sha256::new(),
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.max {
            self.content.extend_from_slice(bytes);
            self.hasher.update(bytes);
        } else if !self.content.is_empty() {
            self.content = Vec::new();
        }
    }

    /// Consumes bytes of `input` up to and including the end-of-data line. Returns how many
    /// bytes were consumed and, if the end was reached, the outcome.
    pub(crate) fn push(&mut self, input: &[u8]) -> (usize, Option<DataEnd>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Mid => {
                    // Fast path: copy up to and including the next CR.
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == b'\r') {
                        Some(cr) => {
                            self.keep(&rest[..=cr]);
                            self.state = State::MidCr;
                            i += cr + 1;
                        }
                        None => {
                            self.keep(rest);
                            i = input.len();
                        }
                    }
                }
                State::MidCr => {
                    let b = input[i];
                    i += 1;
                    self.keep(&[b]);
                    self.state = match b {
                        b'\n' => State::LineStart,
                        b'\r' => State::MidCr,
                        _ => State::Mid,
                    };
                }
                State::LineStart => {
                    let b = input[i];
                    i += 1;
                    if b == b'.' {
                        self.state = State::Dot;
                    } else {
                        self.keep(&[b]);
                        self.state = if b == b'\r' { State::MidCr } else { State::Mid };
                    }
                }
                State::Dot => {
                    let b = input[i];
                    i += 1;
                    // The dot was stuffing unless CR LF follows.
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        self.keep(&[b]);
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        return (i + 1, Some(self.finish()));
                    }
                    // ". CR x": the dot was stuffing; keep the CR and look at x after it.
                    self.keep(b"\r");
                    self.state = State::MidCr;
                }
            }
        }
        (i, None)
    }

    fn finish(&mut self) -> DataEnd {
        if self.size > self.max {
            DataEnd::TooBig { size: self.size }
        } else {
            DataEnd::Complete {
                content: std::mem::take(&mut self.content),
                digest: hex(&std::mem::take(&mut self.hasher).finalize()),
            }
        }
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `content`.
#[cfg(test)]
pub(crate) fn digest(content: &[u8]) -> String {
    hex(&Sha256::digest(content))
}

/// The value of the first `Message-ID` header in the header section of `content`, unfolded and
/// trimmed, if there is a non-empty one.
pub(crate) fn message_id(content: &[u8]) -> Option<String> {
    let mut current: Option<String> = None;
    for raw in content.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if let (Some(value), Some(b' ' | b'\t')) = (current.as_mut(), line.first()) {
            value.push_str(&String::from_utf8_lossy(line));
            continue;
        }
        if let Some(value) = current.take() {
            return Some(value.trim().to_string()).filter(|v| !v.is_empty());
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // A continuation of another header, e.g. a folded Received: line.
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            // The empty line ending the headers, or not a header at all.
            return None;
        };
        if line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(b"message-id")
        {
            current = Some(String::from_utf8_lossy(&line[colon + 1..]).into_owned());
        }
    }
    current
        .map(|value| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(content: &[u8]) -> DataEnd {
        DataEnd::Complete {
            content: content.to_vec(),
            digest: digest(content),
        }
    }

    /// Feeds `input` in pieces of `step` bytes.
    fn read(input: &[u8], step: usize, max: usize) -> (usize, Option<DataEnd>) {
        let mut reader = DataReader::new(max);
        let mut used = 0;
        for piece in input.chunks(step) {
            let (n, end) = reader.push(piece);
            used += n;
            if end.is_some() {
                return (used, end);
            }
            assert_eq!(n, piece.len());
        }
        (used, None)
    }

    #[test]
    fn unstuffs_and_stops_at_the_end_line_whatever_the_chunking() {
        let input = b"Subject: x\r\n\r\n..dot\r\n.\rodd\r\nline\n.\nstill\r\n.\r\nNOOP\r\n";
        let want = b"Subject: x\r\n\r\n.dot\r\n\rodd\r\nline\n.\nstill\r\n".to_vec();
        for step in 1..input.len() {
            let (used, end) = read(input, step, 1000);
            assert_eq!(end, Some(complete(&want)), "step {step}");
            assert_eq!(&input[used..], b"NOOP\r\n", "step {step}");
        }
    }

    #[test]
    fn an_immediate_dot_is_an_empty_message() {
        assert_eq!(read(b".\r\n", 1, 10).1, Some(complete(b"")));
    }

    #[test]
    fn without_the_end_line_nothing_ends() {
        assert_eq!(read(b"a\r\n.x\r\n\r\n", 3, 100).1, None);
    }

    #[test]
    fn too_big_messages_are_measured_but_not_kept() {
        let mut input = vec![b'a'; 50];
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(read(&input, 7, 10).1, Some(DataEnd::TooBig { size: 52 }));
        assert_eq!(read(&input, 7, 52).1, Some(complete(&input[..52])));
    }

    #[test]
    fn digest_is_hex_sha256() {
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn finds_folded_message_ids_in_headers_only() {
        let msg = b"From: a@b\r\nmessage-ID:\r\n <x@y>\r\nSubject: s\r\n\r\nMessage-ID: <no>\r\n";
        assert_eq!(message_id(msg), Some("<x@y>".to_string()));
        assert_eq!(message_id(b"Subject: s\r\n\r\nMessage-ID: <no>\r\n"), None);
        assert_eq!(message_id(b"Message-Id: <last@h>"), Some("<last@h>".into()));
        assert_eq!(message_id(b"Message-Id:   \r\n\r\n"), None);
        let relayed = b"Received: from x\r\n\tby sut.sender.test (Postfix) with ESMTP id 1\r\nMessage-ID: <r@h>\r\n\r\n";
        assert_eq!(message_id(relayed), Some("<r@h>".into()));
    }
}
