//! Reading delivery status notifications (RFC 3464) the bounce collector received.

use crate::events::EventKind;

/// The per-recipient fields of a DSN's `message/delivery-status` part, as an event.
/// Fields are found wherever they start a line, with folded continuation lines joined.
pub fn dsn_event(content: &[u8]) -> EventKind {
    let text = String::from_utf8_lossy(content);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
    };
    EventKind::DsnReceived {
        recipient: field("final-recipient").map(|value| {
            value
                .split_once(';')
                .map_or(value.clone(), |(_, a)| a.trim().to_string())
        }),
        status: field("status"),
        diagnostic: field("diagnostic-code"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_delivery_status_fields() {
        let dsn = b"From: MAILER-DAEMON\r\nContent-Type: multipart/report\r\n\r\n--b\r\n\
Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; sut.sender.test\r\n\r\n\
Final-Recipient: rfc822; bob@example.test\r\nAction: failed\r\nStatus: 5.7.25\r\n\
Diagnostic-Code: smtp; 550 5.7.25 no PTR\r\n    for your address\r\n--b--\r\n";
        assert_eq!(
            dsn_event(dsn),
            EventKind::DsnReceived {
                recipient: Some("bob@example.test".into()),
                status: Some("5.7.25".into()),
                diagnostic: Some("smtp; 550 5.7.25 no PTR for your address".into()),
            }
        );
    }

    #[test]
    fn a_message_without_fields_gives_nothing() {
        assert_eq!(
            dsn_event(b"hello\r\n"),
            EventKind::DsnReceived {
                recipient: None,
                status: None,
                diagnostic: None
            }
        );
    }
}
