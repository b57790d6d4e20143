//! Delivery status notifications (RFC 3464) the bounce collector received, read with
//! `mail-parser`: the `message/delivery-status` part of a `multipart/report`, one report per
//! recipient it names.

use mail_parser::{HeaderName, MessageParser, MimeHeaders};

use crate::events::{Event, EventKind};

/// The per-recipient fields of one DSN recipient block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsnReport {
    /// The `Final-Recipient:` address, without its address type (`rfc822;`).
    pub recipient: Option<String>,
    /// The `Status:` field, e.g. `5.1.1`.
    pub status: Option<String>,
    /// The `Diagnostic-Code:` field, e.g. `smtp; 550 5.1.1 no such user`.
    pub diagnostic: Option<String>,
}

impl DsnReport {
    /// The report as the event the lab records.
    pub fn event(self) -> EventKind {
        EventKind::DsnReceived {
            recipient: self.recipient,
            status: self.status,
            diagnostic: self.diagnostic,
        }
    }

    /// Whether the report is about one of `recipients`.
    pub fn concerns(&self, recipients: &[String]) -> bool {
        self.recipient
            .as_deref()
            .is_some_and(|r| recipients.iter().any(|to| r.contains(to.as_str())))
    }
}

/// One report per recipient block of the message's delivery-status part (`message/
/// delivery-status` or `message/global-delivery-status`), in order. A bounce without such a
/// part, or whose part names no recipient, gives one empty report: it still reached the
/// sender.
pub fn reports(content: &[u8]) -> Vec<DsnReport> {
    let found: Vec<DsnReport> = MessageParser::default()
        .parse(content)
        .map(|message| {
            message
                .parts
                .iter()
                .filter(|part| {
                    part.content_type().is_some_and(|ct| {
                        ct.ctype().eq_ignore_ascii_case("message")
                            && ct.subtype().is_some_and(|s| {
                                s.eq_ignore_ascii_case("delivery-status")
                                    || s.eq_ignore_ascii_case("global-delivery-status")
                            })
                    })
                })
                .flat_map(|part| recipient_blocks(part.contents()))
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        vec![DsnReport::default()]
    } else {
        found
    }
}

/// The DSN reports recorded in `events`, with each one's event index.
pub fn received(events: &[Event]) -> impl Iterator<Item = (usize, DsnReport)> + '_ {
    events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| match &event.kind {
            EventKind::DsnReceived {
                recipient,
                status,
                diagnostic,
            } => Some((
                index,
                DsnReport {
                    recipient: recipient.clone(),
                    status: status.clone(),
                    diagnostic: diagnostic.clone(),
                },
            )),
            _ => None,
        })
}

/// The recipient blocks of a delivery-status body: the field groups after the per-message
/// one, separated by blank lines; each parsed as a header block (folded lines joined).
fn recipient_blocks(body: &[u8]) -> Vec<DsnReport> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let parser = MessageParser::new()
        .header_text(HeaderName::Other("Final-Recipient".into()))
        .header_text(HeaderName::Other("Status".into()))
        .header_text(HeaderName::Other("Diagnostic-Code".into()));
    text.split("\n\n")
        .filter_map(|block| {
            let block = format!("{}\n\n", block.trim_matches('\n'));
            let fields = parser.parse_headers(block.as_bytes())?;
            let field = |name: &'static str| {
                fields
                    .header(HeaderName::Other(name.into()))
                    .and_then(|value| value.as_text())
                    .map(|value| value.trim().to_string())
            };
            let recipient = field("Final-Recipient")?;
            Some(DsnReport {
                recipient: Some(
                    recipient
                        .split_once(';')
                        .map_or(recipient.clone(), |(_, address)| address.trim().to_string()),
                ),
                status: field("Status"),
                diagnostic: field("Diagnostic-Code"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(recipient: &str, status: &str, diagnostic: &str) -> DsnReport {
        DsnReport {
            recipient: Some(recipient.into()),
            status: Some(status.into()),
            diagnostic: Some(diagnostic.into()),
        }
    }

    #[test]
    fn reads_the_delivery_status_fields() {
        let dsn =
            b"From: MAILER-DAEMON\r\nContent-Type: multipart/report; boundary=b\r\n\r\n--b\r\n\
Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; sut.sender.test\r\n\r\n\
Final-Recipient: rfc822; bob@example.test\r\nAction: failed\r\nStatus: 5.7.25\r\n\
Diagnostic-Code: smtp; 550 5.7.25 no PTR\r\n    for your address\r\n--b--\r\n";
        assert_eq!(
            reports(dsn),
            [report(
                "bob@example.test",
                "5.7.25",
                "smtp; 550 5.7.25 no PTR for your address"
            )]
        );
    }

    /// The second recipient of a multipart/report has a status of its own; the human-readable
    /// part and the returned headers, which mention other statuses, are not read as fields.
    #[test]
    fn every_recipient_of_a_multipart_report_counts() {
        let dsn = b"From: MAILER-DAEMON@sut.sender.test\r\nTo: alice@sender.test\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n\
Status: 2.0.0 is what we hoped for.\r\n\r\n--XX\r\n\
Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; sut.sender.test\r\n\r\n\
Final-Recipient: rfc822; bob@example.test\r\nAction: delayed\r\nStatus: 4.4.1\r\n\
Diagnostic-Code: smtp; 451 4.4.1 try later\r\n\r\n\
Final-Recipient: rfc822; carol@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--XX\r\n\
Content-Type: text/rfc822-headers\r\n\r\nFrom: alice@sender.test\r\nStatus: RO\r\n\r\n--XX--\r\n";
        let got = reports(dsn);
        assert_eq!(
            got,
            [
                report("bob@example.test", "4.4.1", "smtp; 451 4.4.1 try later"),
                report(
                    "carol@example.test",
                    "5.1.1",
                    "smtp; 550 5.1.1 no such user"
                ),
            ]
        );
        let carol = got
            .iter()
            .find(|r| r.concerns(&["carol@example.test".to_string()]))
            .unwrap();
        assert_eq!(carol.status.as_deref(), Some("5.1.1"));
    }

    #[test]
    fn a_message_without_a_report_gives_one_empty_report() {
        assert_eq!(reports(b"hello\r\n"), [DsnReport::default()]);
        assert_eq!(
            reports(b"Subject: x\r\n\r\nFinal-Recipient: rfc822; bob@example.test\r\n"),
            [DsnReport::default()]
        );
    }
}
