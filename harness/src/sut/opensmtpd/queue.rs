//! Parsing `smtpctl show queue`: one line per envelope (one recipient of one message).

use crate::events::QueueEntry;

/// Parses `smtpctl show queue`. Each line is
/// `evpid|origin|agent|flags|sender|recipient|destination|created|expires|last-try|retries|state|seconds|error`
/// (OpenSMTPD 6.8's `show_queue_envelope`; the error text may itself contain `|`). Envelopes
/// are grouped by message (the first 8 hex digits of the envelope id); a message's reason is
/// its envelopes' distinct last errors joined with `; `, or, for a message without one,
/// `queue STATE` (`pending`, `inflight`, `offline`).
pub fn parse(output: &str) -> Result<Vec<QueueEntry>, String> {
    let mut entries: Vec<QueueEntry> = Vec::new();
    let mut states: Vec<String> = Vec::new();
    for (number, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.splitn(14, '|').collect();
        if fields.len() < 14
            || fields[0].len() != 16
            || !fields[0].chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(format!("line {}: not an envelope: {line:?}", number + 1));
        }
        let id = fields[0][..8].to_string();
        let recipient = fields[5].to_string();
        let error = fields[13].trim();
        let index = match entries.iter().position(|e| e.id == id) {
            Some(index) => index,
            None => {
                entries.push(QueueEntry {
                    id,
                    recipients: Vec::new(),
                    reason: None,
                });
                states.push(fields[11].to_string());
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        if !entry.recipients.contains(&recipient) {
            entry.recipients.push(recipient);
        }
        if !error.is_empty() {
            match &mut entry.reason {
                Some(reason) => {
                    if !reason.split("; ").any(|r| r == error) {
                        reason.push_str("; ");
                        reason.push_str(error);
                    }
                }
                None => entry.reason = Some(error.to_string()),
            }
        }
    }
    for (entry, state) in entries.iter_mut().zip(states) {
        if entry.reason.is_none() && !state.is_empty() {
            entry.reason = Some(format!("queue {state}"));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_grouped_by_message() {
        let output = "\
61502174d98a4c93|inet4|mta||a@sender.test|bob@example.test|bob@example.test|1795415887|1795419487|1795415888|1|pending|397|Temporary failure in MX lookup
61502174aa8a4c94|inet4|mta||a@sender.test|carol@example.test|carol@example.test|1795415887|1795419487|1795415888|1|pending|397|Network error on destination MXs
7150217400000001|inet4|mta||a@sender.test|dave@example.test|dave@example.test|1795415887|1795419487|0|0|inflight|0|
";
        let entries = parse(output).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "61502174");
        assert_eq!(
            entries[0].recipients,
            ["bob@example.test", "carol@example.test"]
        );
        assert_eq!(
            entries[0].reason.as_deref(),
            Some("Temporary failure in MX lookup; Network error on destination MXs")
        );
        assert_eq!(entries[1].reason.as_deref(), Some("queue inflight"));
    }

    #[test]
    fn errors_may_contain_bars_and_garbage_is_refused() {
        let output = "61502174d98a4c93|local|mta||@|x@y.test|x@y.test|1|2|3|4|offline||a|b\n";
        let entries = parse(output).unwrap();
        assert_eq!(entries[0].reason.as_deref(), Some("a|b"));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("smtpctl: connect: /run/smtpd.sock: No such file\n").is_err());
    }
}
