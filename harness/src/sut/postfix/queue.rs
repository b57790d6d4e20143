//! Parsing `postqueue -j`: one JSON object per queued message.

use serde::Deserialize;

use crate::events::QueueEntry;

#[derive(Deserialize)]
struct Message {
    queue_id: String,
    #[serde(default)]
    queue_name: Option<String>,
    #[serde(default)]
    recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
struct Recipient {
    address: String,
    #[serde(default)]
    delay_reason: Option<String>,
}

/// Parses `postqueue -j` output. A message's reason is its recipients' distinct delay
/// reasons joined with `; `, or for a message without one that is on hold or not yet tried,
/// the queue it is in (`queue hold`, `queue active`, ...).
pub fn parse(output: &str) -> Result<Vec<QueueEntry>, String> {
    let mut entries = Vec::new();
    for (number, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let message: Message = serde_json::from_str(line)
            .map_err(|e| format!("line {}: {e}: {line:?}", number + 1))?;
        let mut reasons: Vec<String> = Vec::new();
        for recipient in &message.recipients {
            if let Some(reason) = recipient.delay_reason.as_ref().filter(|r| !r.is_empty()) {
                if !reasons.contains(reason) {
                    reasons.push(reason.clone());
                }
            }
        }
        let reason = if reasons.is_empty() {
            message.queue_name.map(|queue| format!("queue {queue}"))
        } else {
            Some(reasons.join("; "))
        };
        entries.push(QueueEntry {
            id: message.queue_id,
            recipients: message.recipients.into_iter().map(|r| r.address).collect(),
            reason,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_messages_carry_their_reasons() {
        let output = concat!(
            r#"{"queue_name": "deferred", "queue_id": "AAD2F98C24F", "arrival_time": 1795413475, "message_size": 308, "forced_expire": false, "sender": "a@sender.test", "recipients": [{"address": "bob@example.test", "delay_reason": "Host or domain name not found. Name service error for name=example.test type=MX: Host not found, try again"}, {"address": "carol@example.test", "delay_reason": "Host or domain name not found. Name service error for name=example.test type=MX: Host not found, try again"}]}"#,
            "\n",
            r#"{"queue_name": "active", "queue_id": "B1", "sender": "", "recipients": [{"address": "x@y.test"}]}"#,
            "\n"
        );
        let entries = parse(output).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "AAD2F98C24F");
        assert_eq!(
            entries[0].recipients,
            ["bob@example.test", "carol@example.test"]
        );
        assert_eq!(
            entries[0].reason.as_deref(),
            Some("Host or domain name not found. Name service error for name=example.test type=MX: Host not found, try again")
        );
        assert_eq!(entries[1].reason.as_deref(), Some("queue active"));
    }

    #[test]
    fn empty_queue_and_garbage() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("Mail queue is empty\n").is_err());
    }
}
