//! Command-line framing with a length limit and bounded memory.
//!
//! A command line ends at LF; a CR before it is dropped (bare LF is tolerated for commands, as
//! Postfix does). A line longer than the limit is not kept: its bytes are discarded as they
//! arrive (only a short prefix is remembered for the event log) and it is reported once its LF
//! arrives, so every line the client sent gets exactly one reply, in order.

/// How much of an over-long line is remembered for the event log.
const TOO_LONG_PREFIX: usize = 64;

/// A line taken from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line within the limit, without its CRLF.
    Complete(Vec<u8>),
    /// A line over the limit: its length (without CRLF) and its first bytes.
    TooLong {
        /// Length of the whole line without CRLF.
        len: usize,
        /// The first bytes of the line.
        prefix: Vec<u8>,
    },
}

/// Splits a byte stream into command lines.
#[derive(Debug)]
pub(crate) struct LineReader {
    max: usize,
    buf: Vec<u8>,
    /// `Some(length so far)` while discarding an over-long line.
    overflow: Option<usize>,
    /// The last byte of the current line so far (0 if none).
    last: u8,
}

impl LineReader {
    /// A reader accepting lines of at most `max` bytes (not counting CRLF).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            overflow: None,
            last: 0,
        }
    }

    /// Consumes bytes of `input` up to and including the first LF. Returns how many bytes were
    /// consumed and the line, if one was completed.
    pub(crate) fn push(&mut self, input: &[u8]) -> (usize, Option<Line>) {
        let (chunk, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(lf) => (&input[..lf], true),
            None => (input, false),
        };
        let consumed = chunk.len() + usize::from(complete);
        if let Some(&last) = chunk.last() {
            self.last = last;
        }

        match self.overflow.as_mut() {
            Some(len) => *len += chunk.len(),
            None => {
                self.buf.extend_from_slice(chunk);
                // One extra byte of room for the CR of a maximal line.
                if self.buf.len() > self.max + 1 {
                    self.overflow = Some(self.buf.len());
                    self.buf.truncate(TOO_LONG_PREFIX);
                }
            }
        }
        if !complete {
            return (consumed, None);
        }

        let ends_with_cr = std::mem::take(&mut self.last) == b'\r';
        let mut line = std::mem::take(&mut self.buf);
        let len = self.overflow.take().unwrap_or(line.len()) - usize::from(ends_with_cr);
        line.truncate(len);
        let line = if len > self.max {
            line.truncate(TOO_LONG_PREFIX);
            Line::TooLong { len, prefix: line }
        } else {
            Line::Complete(line)
        };
        (consumed, Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader, mut input: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (used, line) = reader.push(input);
            input = &input[used..];
            out.extend(line);
        }
        out
    }

    #[test]
    fn splits_on_crlf_and_bare_lf() {
        let mut reader = LineReader::new(10);
        let got = lines(&mut reader, b"NOOP\r\nQUIT\nRS");
        assert_eq!(
            got,
            vec![
                Line::Complete(b"NOOP".to_vec()),
                Line::Complete(b"QUIT".to_vec())
            ]
        );
        assert_eq!(reader.buf, b"RS");
        assert_eq!(
            lines(&mut reader, b"ET\r\n"),
            vec![Line::Complete(b"RSET".to_vec())]
        );
        assert!(reader.buf.is_empty() && reader.overflow.is_none());
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_fine_one_more_is_too_long() {
        let mut reader = LineReader::new(4);
        assert_eq!(
            lines(&mut reader, b"1234\r\n12345\r\nok\r\n"),
            vec![
                Line::Complete(b"1234".to_vec()),
                Line::TooLong {
                    len: 5,
                    prefix: b"12345".to_vec()
                },
                Line::Complete(b"ok".to_vec()),
            ]
        );
    }

    #[test]
    fn over_long_lines_are_discarded_in_pieces_with_bounded_memory() {
        let mut reader = LineReader::new(2048);
        let chunk = vec![b'x'; 1000];
        for _ in 0..100 {
            assert_eq!(reader.push(&chunk), (1000, None));
            assert!(reader.buf.len() <= 2049);
        }
        let got = lines(&mut reader, b"\r\nNOOP\r\n");
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], Line::TooLong { len: 100_000, prefix } if prefix.len() == 64));
        assert_eq!(got[1], Line::Complete(b"NOOP".to_vec()));
    }
}
