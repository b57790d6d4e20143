//! Delivery status notifications (RFC 3464 `multipart/report`, RFC 3462) for bounces.

use std::time::{SystemTime, UNIX_EPOCH};

use super::session::Failure;
use crate::sut::OutgoingMessage;

/// One failed recipient as the DSN reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The recipient.
    pub recipient: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The MX host that gave the reply, if one did.
    pub remote_mta: Option<String>,
    /// `smtp; 550 5.1.1 ...` for a reply, `x-local; ...` otherwise.
    pub diagnostic: String,
    /// One human-readable line.
    pub text: String,
}

impl Failed {
    /// A recipient refused by an MX host (or failed on its way there).
    pub fn from_failure(recipient: &str, failure: &Failure) -> Failed {
        if failure.from_remote {
            Failed {
                recipient: recipient.to_string(),
                status: enhanced_status(&failure.reply).unwrap_or_else(|| {
                    format!("{}.0.0", failure.reply.chars().next().unwrap_or('5'))
                }),
                remote_mta: Some(failure.host.clone()),
                diagnostic: format!("smtp; {}", failure.reply),
                text: failure.describe(),
            }
        } else {
            Failed::local(recipient, "5.4.0", &failure.describe())
        }
    }

    /// A failure found by the sender itself (no MX host said anything).
    pub fn local(recipient: &str, status: &str, text: &str) -> Failed {
        Failed {
            recipient: recipient.to_string(),
            status: status.to_string(),
            remote_mta: None,
            diagnostic: format!("x-local; {text}"),
            text: text.to_string(),
        }
    }
}

/// The RFC 3463 enhanced status code at the start of a reply's text, e.g. `5.7.1` in
/// `550 5.7.1 Relay denied` (or `550-5.7.1 ...`), if its class matches the reply code's.
pub fn enhanced_status(reply: &str) -> Option<String> {
    crate::observe::SmtpReply::parse(reply).ok()?.enhanced
}

/// Builds the bounce of `original` for `failed`: from `MAILER-DAEMON` with the null envelope
/// sender, to the original envelope sender, with a human-readable part, the
/// `message/delivery-status` part and the original headers.
pub fn bounce(
    original: &OutgoingMessage,
    failed: &[Failed],
    reporting_mta: &str,
    arrival: SystemTime,
    now: SystemTime,
    unique: u64,
) -> OutgoingMessage {
    let boundary = format!("mxlab-reference-{unique:016x}");
    let date = rfc5322_date(now);
    let mut text = String::new();
    let mut line = |s: &str| {
        text.push_str(s);
        text.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    ));
    line(&format!("To: <{}>", original.from));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {date}"));
    line(&format!("Message-ID: <dsn.{unique:016x}@{reporting_mta}>"));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated delivery status notification.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=us-ascii");
    line("Content-Description: Notification");
    line("");
    line(&format!("This is the mail system at host {reporting_mta}."));
    line("");
    line("Your message could not be delivered to one or more recipients:");
    line("");
    for entry in failed {
        line(&format!("<{}>: {}", entry.recipient, ascii(&entry.text)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("Content-Description: Delivery report");
    line("");
    line(&format!("Reporting-MTA: dns; {reporting_mta}"));
    line(&format!("Arrival-Date: {}", rfc5322_date(arrival)));
    for entry in failed {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", entry.recipient));
        line(&format!("Original-Recipient: rfc822; {}", entry.recipient));
        line("Action: failed");
        line(&format!("Status: {}", entry.status));
        if let Some(mta) = &entry.remote_mta {
            line(&format!("Remote-MTA: dns; {mta}"));
        }
        line(&format!("Diagnostic-Code: {}", ascii(&entry.diagnostic)));
        line(&format!("Last-Attempt-Date: {date}"));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("Content-Description: Undelivered Message Headers");
    line("");
    let mut content = text.into_bytes();
    content.extend_from_slice(headers(&original.content));
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    OutgoingMessage {
        from: String::new(),
        to: vec![original.from.clone()],
        content,
    }
}

/// The header section of a message, up to and including the line end before the blank line.
fn headers(content: &[u8]) -> &[u8] {
    let mut start = 0;
    while start < content.len() {
        let end = content[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |i| start + i + 1);
        let line = &content[start..end];
        if line == b"\r\n" || line == b"\n" {
            return &content[..start];
        }
        start = end;
    }
    content
}

/// Printable ASCII only, so the report stays 7-bit.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `Mon, 23 Nov 2026 00:00:00 +0000`.
pub fn rfc5322_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn original() -> OutgoingMessage {
        OutgoingMessage {
            from: "alice@sender.test".into(),
            to: vec!["bob@example.test".into()],
            content: b"From: alice@sender.test\r\nMessage-ID: <1.x@sender.test>\r\n\r\nbody\r\n"
                .to_vec(),
        }
    }

    fn refused() -> Failure {
        Failure {
            host: "mx1.example.test".into(),
            peer: "mx1.example.test[192.0.2.26]".into(),
            reply: "550 5.7.25 Reverse DNS required".into(),
            from_remote: true,
            stage: "RCPT TO:<bob@example.test>".into(),
        }
    }

    #[test]
    fn enhanced_status_codes() {
        assert_eq!(
            enhanced_status("550 5.1.1 no such user").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(enhanced_status("421-4.3.2 busy").as_deref(), Some("4.3.2"));
        assert_eq!(enhanced_status("550 no such user"), None);
        assert_eq!(enhanced_status("550 4.1.1 class mismatch"), None);
        assert_eq!(enhanced_status("550"), None);
        let failed = Failed::from_failure("bob@example.test", &refused());
        assert_eq!(failed.status, "5.7.25");
        let mut plain = refused();
        plain.reply = "554 go away".into();
        assert_eq!(Failed::from_failure("b@x", &plain).status, "5.0.0");
    }

    #[test]
    fn the_bounce_is_a_multipart_report() {
        let failed = [Failed::from_failure("bob@example.test", &refused())];
        let at = UNIX_EPOCH + Duration::from_secs(1_795_392_000); // 2026-11-23 00:00 UTC
        let dsn = bounce(&original(), &failed, "sut.sender.test", at, at, 42);
        assert_eq!(dsn.from, "");
        assert_eq!(dsn.to, ["alice@sender.test"]);
        let text = String::from_utf8(dsn.content).unwrap();
        for expected in [
            "From: Mail Delivery System <MAILER-DAEMON@sut.sender.test>\r\n",
            "To: <alice@sender.test>\r\n",
            "Date: Mon, 23 Nov 2026 00:00:00 +0000\r\n",
            "Content-Type: multipart/report; report-type=delivery-status; \
             boundary=\"mxlab-reference-000000000000002a\"\r\n",
            "\r\n--mxlab-reference-000000000000002a\r\nContent-Type: message/delivery-status\r\n",
            "Reporting-MTA: dns; sut.sender.test\r\n",
            "Final-Recipient: rfc822; bob@example.test\r\n",
            "Action: failed\r\n",
            "Status: 5.7.25\r\n",
            "Remote-MTA: dns; mx1.example.test\r\n",
            "Diagnostic-Code: smtp; 550 5.7.25 Reverse DNS required\r\n",
            "Content-Type: text/rfc822-headers\r\n",
            "Message-ID: <1.x@sender.test>\r\n\r\n--mxlab-reference-000000000000002a--\r\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("body"), "only the headers are returned");
        assert!(text.ends_with("--\r\n"));
        assert!(text.split("\r\n").all(|l| l.len() < 998 && l.is_ascii()));
        // Every line ends in CRLF.
        assert!(!text.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 01:01:01 +0000");
    }
}
