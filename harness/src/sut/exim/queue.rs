//! Parsing `exim -bp` and the per-message logs (`spool/msglog/ID`) for the last errors.

use crate::events::QueueEntry;

/// One message of `exim -bp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The message id, e.g. `1xVNfv-000007-06`.
    pub id: String,
    /// Whether the message is frozen.
    pub frozen: bool,
    /// Recipients not yet delivered.
    pub pending: Vec<String>,
    /// Whether Exim could not read the message's spool header while listing it.
    pub unreadable: bool,
}

/// Parses `exim -bp`: per message a header line (`age size id <sender> [*** frozen ***]`),
/// then one indented line per recipient, `D ` (or `+D `) before those already delivered, then
/// a blank line.
pub fn parse_listing(output: &str) -> Result<Vec<Listed>, String> {
    let mut messages: Vec<Listed> = Vec::new();
    let mut in_message = false;
    for (number, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            in_message = false;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The sender is missing when the message's spool header could not be read.
        let is_header = fields.len() >= 3
            && is_message_id(fields[2])
            && fields.get(3).is_none_or(|sender| sender.starts_with('<'));
        if is_header {
            messages.push(Listed {
                id: fields[2].to_string(),
                frozen: line.contains("*** frozen ***"),
                pending: Vec::new(),
                unreadable: false,
            });
            in_message = true;
            continue;
        }
        let Some(message) = messages.last_mut().filter(|_| in_message) else {
            return Err(format!(
                "line {}: not a message header: {line:?}",
                number + 1
            ));
        };
        match fields.as_slice() {
            ["D" | "+D", ..] => {}
            // The header could not be read (`*** spool read error: … ***`, or `*** spool
            // format error ***`). With no recipient lines after it, the message was removed by
            // a delivery between Exim's reading of the directory and of the header.
            ["***", "spool", ..] => message.unreadable = true,
            [address] => message.pending.push((*address).to_string()),
            _ => {
                return Err(format!(
                    "line {}: not a recipient line: {line:?}",
                    number + 1
                ))
            }
        }
    }
    messages.retain(|message| !(message.unreadable && message.pending.is_empty()));
    Ok(messages)
}

/// Exim message ids: `1xVNfv-000007-06` (4.97+ style, also 4.96 with long ids) or
/// `1xVNfv-00000A-Bc` (base-62 parts of 6, 6 (or 11 in later versions) and 2 or 4 characters).
fn is_message_id(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 6
        && (6..=11).contains(&parts[1].len())
        && (2..=4).contains(&parts[2].len())
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The last temporary error per recipient in a message log, as `(recipient, error)` in the
/// order of first appearance. Lines look like
/// `2026-11-23 06:37:15.051 bob@example.test R=dnslookup defer (-1) DT=0.000s: host lookup did not complete`
/// (optionally with `==` before the address); "retry time not reached" lines are skipped, as
/// they repeat no error.
pub fn last_errors(msglog: &str) -> Vec<(String, String)> {
    let mut errors: Vec<(String, String)> = Vec::new();
    for line in msglog.lines() {
        let Some(at) = line.find(" defer (") else {
            continue;
        };
        let (head, tail) = line.split_at(at);
        let after_code = tail[" defer (".len()..]
            .split_once(')')
            .map_or("", |(_, rest)| rest);
        let Some(reason) = after_code.split_once(": ").map(|(_, r)| r.trim()) else {
            continue;
        };
        if reason.contains("retry time not reached") || reason.is_empty() {
            continue;
        }
        // Drop the date and time, an optional `==`, and the router/transport fields.
        let recipient = head
            .split_whitespace()
            .skip(2)
            .find(|token| *token != "==" && !token.contains('='))
            .unwrap_or_default()
            .to_string();
        match errors.iter_mut().find(|(r, _)| *r == recipient) {
            Some(entry) => entry.1 = reason.to_string(),
            None => errors.push((recipient, reason.to_string())),
        }
    }
    errors
}

/// A queue entry from a listed message and its message log (if any): the reason is the
/// pending recipients' distinct last errors joined with `; `, else `frozen` for a frozen
/// message, else none (not tried yet).
pub fn entry(listed: &Listed, msglog: Option<&str>) -> QueueEntry {
    let errors = msglog.map(last_errors).unwrap_or_default();
    let mut reasons: Vec<&str> = Vec::new();
    for recipient in &listed.pending {
        let error = errors
            .iter()
            .find(|(r, _)| r.trim_matches(['<', '>']).eq_ignore_ascii_case(recipient))
            .or_else(|| errors.last().filter(|_| listed.pending.len() == 1));
        if let Some((_, error)) = error {
            if !reasons.contains(&error.as_str()) {
                reasons.push(error);
            }
        }
    }
    let reason = if !reasons.is_empty() {
        Some(reasons.join("; "))
    } else if listed.frozen {
        Some("frozen".to_string())
    } else {
        None
    };
    QueueEntry {
        id: listed.id.clone(),
        recipients: listed.pending.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = " 0m   215 1xVNfv-000007-06 <a@sender.test>\n          bob@example.test\n        D carol@example.test\n          dave@example.test\n\n25h  2.9K 1xVNfw-00000A-0B <> *** frozen ***\n          a@sender.test\n\n";

    #[test]
    fn the_listing_keeps_pending_recipients_and_frozen_state() {
        let listed = parse_listing(LISTING).unwrap();
        assert_eq!(
            listed,
            [
                Listed {
                    id: "1xVNfv-000007-06".into(),
                    frozen: false,
                    pending: vec!["bob@example.test".into(), "dave@example.test".into()],
                    unreadable: false,
                },
                Listed {
                    id: "1xVNfw-00000A-0B".into(),
                    frozen: true,
                    pending: vec!["a@sender.test".into()],
                    unreadable: false,
                },
            ]
        );
        assert!(parse_listing("").unwrap().is_empty());
        assert!(parse_listing("Exim configuration error\n").is_err());
    }

    #[test]
    fn a_message_removed_while_listing_is_no_longer_queued() {
        // What Exim prints for a message whose -H file vanished between reading the
        // directory and reading the header (queue.c: no sender, the error on its own line).
        let output = "\
 0m   1.3K 1xVNfv-000007-06 <alice@sender.test>
          bob@example.test

 0m   1.3K 1xVNfw-000008-07
    *** spool read error: No such file or directory ***

";
        let listed = parse_listing(output).expect("parses");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "1xVNfv-000007-06");
        assert_eq!(listed[0].pending, ["bob@example.test"]);
    }

    #[test]
    fn the_last_real_error_per_recipient_wins() {
        let msglog = "\
2026-11-23 06:37:15.051 bob@example.test R=dnslookup defer (-1) DT=0.000s: host lookup did not complete
2026-11-23 06:37:16.163 bob@example.test routing defer (-52) DT=0.000s: retry time not reached
2026-11-23 06:37:17.100 H=mx1.example.test [2001:db8::25] Connection timed out
2026-11-23 06:37:22.100 == dave@example.test R=dnslookup T=remote_smtp defer (110): Connection timed out H=mx1.example.test [192.0.2.25]
2026-11-23 06:37:23.173 bob@example.test R=dnslookup T=remote_smtp defer (111): Connection refused
";
        assert_eq!(
            last_errors(msglog),
            [
                (
                    "bob@example.test".to_string(),
                    "Connection refused".to_string()
                ),
                (
                    "dave@example.test".to_string(),
                    "Connection timed out H=mx1.example.test [192.0.2.25]".to_string()
                ),
            ]
        );
        let listed = &parse_listing(LISTING).unwrap()[0];
        let entry = entry(listed, Some(msglog));
        assert_eq!(entry.recipients, ["bob@example.test", "dave@example.test"]);
        assert_eq!(
            entry.reason.as_deref(),
            Some("Connection refused; Connection timed out H=mx1.example.test [192.0.2.25]")
        );
    }

    #[test]
    fn untried_and_frozen_messages() {
        let listed = parse_listing(LISTING).unwrap();
        assert_eq!(entry(&listed[0], None).reason, None);
        assert_eq!(
            entry(&listed[1], Some("")).reason.as_deref(),
            Some("frozen")
        );
    }
}
