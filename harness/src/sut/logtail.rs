//! Follows a log file the system under test writes and records each line as an event.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::{EventKind, EventLog};
use crate::sut::background::BackgroundTask;

/// How often the file is polled for new lines.
const POLL: Duration = Duration::from_millis(25);

/// A background task that turns new lines of a file into [`EventKind::SutLog`] events.
pub(crate) struct LogTail {
    task: BackgroundTask,
}

impl LogTail {
    /// Starts following `path` from its beginning (it may not exist yet).
    pub(crate) fn start(path: PathBuf, log: EventLog) -> Self {
        let task = BackgroundTask::spawn(|mut stopped| async move {
            let mut reader = LineReader::new(path);
            loop {
                let done = tokio::select! {
                    _ = &mut stopped => true,
                    _ = tokio::time::sleep(POLL) => false,
                };
                for line in reader.read_new(done) {
                    log.record(EventKind::SutLog { line });
                }
                if done {
                    return;
                }
            }
        });
        Self { task }
    }

    /// Records every line written so far, including an unterminated last line, and stops.
    pub(crate) async fn finish(self) {
        self.task.finish().await;
    }
}

/// Reads a growing file in complete lines.
struct LineReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LineReader {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The complete lines added since the last call; with `flush`, also a trailing partial one.
    fn read_new(&mut self, flush: bool) -> Vec<String> {
        let mut fresh = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            if file.seek(SeekFrom::Start(self.offset)).is_ok() {
                if let Ok(n) = file.read_to_end(&mut fresh) {
                    self.offset += n as u64;
                }
            }
        }
        self.partial.extend_from_slice(&fresh);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            lines.push(decode(&line));
        }
        if flush && !self.partial.is_empty() {
            lines.push(decode(&std::mem::take(&mut self.partial)));
        }
        lines
    }
}

fn decode(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// The last `n` lines of a file (empty if it cannot be read).
pub(crate) fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_returned_once_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let mut reader = LineReader::new(path.clone());
        assert!(reader.read_new(false).is_empty(), "missing file");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"one\ntwo\nthr").unwrap();
        assert_eq!(reader.read_new(false), ["one", "two"]);
        file.write_all(b"ee\nfour").unwrap();
        assert_eq!(reader.read_new(false), ["three"]);
        assert_eq!(reader.read_new(true), ["four"]);
        assert!(reader.read_new(true).is_empty());
    }

    #[tokio::test]
    async fn the_tail_records_events_and_flushes_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let log = EventLog::new();
        let tail = LogTail::start(path.clone(), log.clone());
        std::fs::write(&path, "hello\n").unwrap();
        let seen = log
            .wait_until(Duration::from_secs(5), |events| !events.is_empty())
            .await;
        assert!(seen);
        std::fs::write(&path, "hello\nlast").unwrap();
        tail.finish().await;
        let lines: Vec<String> = log
            .snapshot()
            .into_iter()
            .map(|e| match e.kind {
                EventKind::SutLog { line } => line,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(lines, ["hello", "last"]);
    }

    #[test]
    fn last_lines_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\nb\n\nc\n").unwrap();
        assert_eq!(last_lines(&path, 2), ["b", "c"]);
        assert!(last_lines(&dir.path().join("none"), 3).is_empty());
    }
}
