//! The output of a driver's `queue` step.

use crate::events::QueueEntry;

/// Parses `queue` output: each non-blank line is one entry, `ID<TAB>RECIPIENTS<TAB>REASON`
/// (recipients separated by `,`, angle brackets dropped; the reason may be missing or empty),
/// or, without a tab, just an id.
pub(super) fn parse(output: &str) -> Vec<QueueEntry> {
    output
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let id = fields.next().unwrap_or_default().trim().to_string();
            let recipients = fields
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|rcpt| rcpt.trim().trim_start_matches('<').trim_end_matches('>'))
                .filter(|rcpt| !rcpt.is_empty())
                .map(String::from)
                .collect();
            let reason = fields
                .next()
                .map(str::trim)
                .filter(|reason| !reason.is_empty())
                .map(String::from);
            QueueEntry {
                id,
                recipients,
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_separated_and_raw_lines_are_entries() {
        let output = "A1\t<bob@example.test>, carol@example.test\t451 try later\n\n\
                      B2\tdave@example.test\nsomething raw\nC3\teve@example.test\t\n";
        let entries = parse(output);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].id, "A1");
        assert_eq!(
            entries[0].recipients,
            ["bob@example.test", "carol@example.test"]
        );
        assert_eq!(entries[0].reason.as_deref(), Some("451 try later"));
        assert_eq!(entries[1].recipients, ["dave@example.test"]);
        assert_eq!(entries[1].reason, None);
        assert_eq!(entries[2].id, "something raw");
        assert!(entries[2].recipients.is_empty());
        assert_eq!(entries[3].reason, None);
        assert!(parse("  \n").is_empty());
    }
}
