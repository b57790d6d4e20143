//! A small SMTP client for handing messages to the system under test.
//!
//! One transaction per connection, no pipelining, no TLS, no AUTH: the SUT listens on loopback
//! and relays for it.

use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

use super::OutgoingMessage;

/// How long one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest reply line accepted.
const MAX_LINE: usize = 4096;
/// The name the client gives in EHLO.
const EHLO_NAME: &str = "mxlab.invalid";

/// One SMTP reply: the code and the text lines (without CRLF), joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The full reply, every line with its code, joined with `\n`.
    pub text: String,
}

impl Reply {
    fn is_positive_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Reads one (possibly multi-line) reply.
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Reply, String> {
    let mut lines = Vec::new();
    loop {
        let mut raw = Vec::new();
        let n = tokio::time::timeout(REPLY_TIMEOUT, read_line(reader, &mut raw))
            .await
            .map_err(|_| format!("no reply within {} s", REPLY_TIMEOUT.as_secs()))?
            .map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            return Err(if lines.is_empty() {
                "connection closed instead of a reply".to_string()
            } else {
                format!("connection closed inside the reply {:?}", lines.join("\n"))
            });
        }
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let bytes = line.as_bytes();
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!("malformed reply line {line:?}"));
        }
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| format!("bad code {line:?}"))?;
        let more = bytes.get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Ok(Reply {
                code,
                text: lines.join("\n"),
            });
        }
    }
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut limited = (&mut *reader).take(MAX_LINE as u64);
    limited.read_until(b'\n', out).await
}

/// Dot-stuffs `content` for DATA and appends the terminating `.` line.
///
/// Bare LF line ends become CRLF; a missing final line end is added.
pub(crate) fn data_payload(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 5);
    let mut at_line_start = true;
    let mut previous = 0u8;
    for &byte in content {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        if byte == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
        previous = byte;
    }
    if !content.is_empty() && !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Sends one command line and reads the reply; fails unless the reply's code is `expect`'s.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &str,
    expect: fn(&Reply) -> bool,
) -> Result<Reply, String> {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| format!("sending {line:?}: {e}"))?;
    let reply = read_reply(stream)
        .await
        .map_err(|e| format!("after {line:?}: {e}"))?;
    if expect(&reply) {
        Ok(reply)
    } else {
        Err(format!("{line:?} got {:?}", reply.text))
    }
}

/// Runs one SMTP transaction for `message` over `stream` (a fresh connection) and returns the
/// reply to the end of DATA. An error names the step that failed and the server's reply.
pub(crate) async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    message: &OutgoingMessage,
) -> Result<String, String> {
    let mut stream = BufReader::new(stream);
    let greeting = read_reply(&mut stream)
        .await
        .map_err(|e| format!("greeting: {e}"))?;
    if greeting.code != 220 {
        return Err(format!("greeting was {:?}", greeting.text));
    }
    command(
        &mut stream,
        &format!("EHLO {EHLO_NAME}"),
        Reply::is_positive_completion,
    )
    .await?;
    command(
        &mut stream,
        &format!("MAIL FROM:<{}>", message.from),
        Reply::is_positive_completion,
    )
    .await?;
    for rcpt in &message.to {
        command(
            &mut stream,
            &format!("RCPT TO:<{rcpt}>"),
            Reply::is_positive_completion,
        )
        .await?;
    }
    command(&mut stream, "DATA", |r| r.code == 354).await?;
    stream
        .get_mut()
        .write_all(&data_payload(&message.content))
        .await
        .map_err(|e| format!("sending the message content: {e}"))?;
    let done = read_reply(&mut stream)
        .await
        .map_err(|e| format!("after the end of DATA: {e}"))?;
    if !done.is_positive_completion() {
        return Err(format!("end of DATA got {:?}", done.text));
    }
    // The message is queued: say QUIT and hang up without waiting for the 221, which Exim
    // 4.96 holds back for 200 ms. A failing QUIT changes nothing.
    let _ = stream.get_mut().write_all(b"QUIT\r\n").await;
    let _ = stream.get_mut().shutdown().await;
    Ok(done.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(data_payload(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(data_payload(b".\r\nx"), b"..\r\nx\r\n.\r\n");
        assert_eq!(data_payload(b"a\nb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(data_payload(b""), b".\r\n");
        assert_eq!(data_payload(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }

    #[tokio::test]
    async fn multi_line_replies_are_joined() {
        let mut input: &[u8] = b"250-a\r\n250-b\r\n250 c\r\n";
        let reply = read_reply(&mut input).await.unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.text, "250-a\n250-b\n250 c");
        let mut bad: &[u8] = b"hello\r\n";
        assert!(read_reply(&mut bad).await.is_err());
    }

    /// A scripted server: sends `replies` one by one, each after reading one command (after the
    /// greeting), and collects what the client sent.
    async fn scripted(
        replies: &'static [&'static str],
        message: OutgoingMessage,
    ) -> (Result<String, String>, String) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let server_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (i, reply) in replies.iter().enumerate() {
                if i > 0 {
                    // Read until the client's next command (or message end) arrives.
                    let mut buf = [0u8; 4096];
                    let n = server.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                server.write_all(reply.as_bytes()).await.unwrap();
            }
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
            seen.extend_from_slice(&rest);
            String::from_utf8(seen).unwrap()
        });
        let result = send(client, &message).await;
        (result, server_task.await.unwrap())
    }

    fn message() -> OutgoingMessage {
        OutgoingMessage {
            from: "alice@sender.test".into(),
            to: vec!["bob@example.test".into()],
            content: b"Subject: hi\r\n\r\n.dot\r\n".to_vec(),
        }
    }

    #[tokio::test]
    async fn a_full_transaction() {
        let (result, seen) = scripted(
            &[
                "220 hi\r\n",
                "250-hello\r\n250 PIPELINING\r\n",
                "250 ok\r\n",
                "250 ok\r\n",
                "354 go\r\n",
                "250 2.0.0 Ok: queued as ABC\r\n",
            ],
            message(),
        )
        .await;
        assert_eq!(result.unwrap(), "250 2.0.0 Ok: queued as ABC");
        assert_eq!(
            seen,
            "EHLO mxlab.invalid\r\nMAIL FROM:<alice@sender.test>\r\n\
             RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n"
        );
    }

    #[tokio::test]
    async fn a_refused_recipient_names_the_step() {
        let (result, _) = scripted(
            &[
                "220 hi\r\n",
                "250 hello\r\n",
                "250 ok\r\n",
                "554 5.7.1 Relay access denied\r\n",
            ],
            message(),
        )
        .await;
        let err = result.unwrap_err();
        assert!(err.contains("RCPT TO:<bob@example.test>"), "{err}");
        assert!(err.contains("Relay access denied"), "{err}");
    }
}
