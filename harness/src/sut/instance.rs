//! What every SUT instance gets besides its network namespace: its own host name (a UTS
//! namespace), an `/etc/hosts` naming it, and a `/dev/log` whose messages become
//! [`EventKind::SutLog`] events, as the lines of a followed log file do.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::events::{EventKind, EventLog};
use crate::sut::background::BackgroundTask;
use crate::sut::{SutContext, SutError};

/// The private `/dev` of an instance, under its work directory.
const DEV_DIR: &str = "dev";

/// The `/etc/hosts` of an instance, in its work directory.
const HOSTS_FILE: &str = "hosts";

/// How long the receiver waits for one more queued message once it is asked to stop.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// How many of the last syslog lines are kept for error messages.
const RECENT: usize = 25;

/// The largest syslog datagram read whole (longer ones are cut by the kernel).
const MAX_DATAGRAM: usize = 16 * 1024;

/// The host name, `/etc/hosts` and `/dev/log` of one instance; keep it for the instance's
/// life and [`finish`](Self::finish) it after the instance stopped.
pub(crate) struct Isolation {
    hostname: String,
    hosts: PathBuf,
    dev: PathBuf,
    syslog: SyslogReceiver,
}

impl Isolation {
    /// Writes the instance's `/etc/hosts` (localhost, and `ctx.hostname` with its short name
    /// on each of the SUT's addresses), makes its private `/dev` and starts receiving on its
    /// `/dev/log`.
    pub(crate) fn prepare(sut: &'static str, ctx: &SutContext<'_>) -> Result<Self, SutError> {
        let addresses = ctx.namespace.addresses().map_err(|e| SutError::Namespace {
            sut,
            action: "list the SUT's addresses".into(),
            detail: e.to_string(),
        })?;
        let hosts = ctx.work_dir.join(HOSTS_FILE);
        write(sut, &hosts, &hosts_file(ctx.hostname, &addresses), 0o644)?;
        let dev = ctx.work_dir.join(DEV_DIR);
        std::fs::create_dir_all(&dev).map_err(|e| io(sut, &dev, e))?;
        std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(sut, &dev, e))?;
        let syslog = SyslogReceiver::bind(sut, &dev.join("log"), ctx.log.clone())?;
        Ok(Self {
            hostname: ctx.hostname.to_owned(),
            hosts,
            dev,
            syslog,
        })
    }

    /// `options` with the instance's host name, private `/dev` and `/etc/hosts` added.
    pub(crate) fn spawn_options(&self, options: netns::SpawnOptions) -> netns::SpawnOptions {
        let mut options = options;
        options.hostname = Some(self.hostname.clone());
        options.private_dev = Some(self.dev.clone());
        // Last, so that it lands on top even where /etc/hosts leads into a directory an
        // earlier mount covers.
        options
            .bind_mounts
            .push((self.hosts.clone(), PathBuf::from("/etc/hosts")));
        options
    }

    /// The last `n` lines the instance sent to `/dev/log`, for start-up error messages.
    pub(crate) fn last_syslog_lines(&self, n: usize) -> Vec<String> {
        let recent = self.syslog.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .skip(recent.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Records every message the instance sent to `/dev/log` and stops receiving.
    pub(crate) async fn finish(self) {
        self.syslog.finish().await;
    }
}

/// `/etc/hosts` for a SUT named `hostname` with `addresses`.
fn hosts_file(hostname: &str, addresses: &[IpAddr]) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for address in addresses {
        text.push_str(&format!("{address}\t{hostname} {short}\n"));
    }
    text
}

fn write(sut: &'static str, path: &Path, contents: &str, mode: u32) -> Result<(), SutError> {
    std::fs::write(path, contents).map_err(|e| io(sut, path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io(sut, path, e))
}

fn io(sut: &'static str, path: &Path, source: std::io::Error) -> SutError {
    SutError::Io {
        sut,
        action: format!("prepare {}", path.display()),
        source,
    }
}

/// A unix datagram socket the MTA's syslog(3) calls write to; every message becomes an
/// [`EventKind::SutLog`] event.
pub(crate) struct SyslogReceiver {
    /// The last [`RECENT`] lines received.
    recent: Arc<Mutex<VecDeque<String>>>,
    task: BackgroundTask,
}

impl SyslogReceiver {
    /// Binds the socket at `path` (writable by every user: the MTA's processes run under
    /// their own users) and starts recording what arrives.
    pub(crate) fn bind(sut: &'static str, path: &Path, log: EventLog) -> Result<Self, SutError> {
        let _ = std::fs::remove_file(path);
        let socket = tokio::net::UnixDatagram::bind(path).map_err(|e| SutError::Io {
            sut,
            action: format!("bind the syslog socket {}", path.display()),
            source: e,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| io(sut, path, e))?;
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let kept = recent.clone();
        let record = move |datagram: &[u8]| {
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            for line in syslog_lines(datagram) {
                if kept.len() == RECENT {
                    kept.pop_front();
                }
                kept.push_back(line.clone());
                log.record(EventKind::SutLog { line });
            }
        };
        let task = BackgroundTask::spawn(|mut stopped| async move {
            let mut buffer = vec![0u8; MAX_DATAGRAM];
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    received = socket.recv(&mut buffer) => match received {
                        Ok(n) => record(&buffer[..n]),
                        Err(_) => break,
                    },
                }
            }
            // What was sent before the stop is still queued on the socket (a plain try_recv
            // would not see it before tokio noticed the socket readable).
            while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_WAIT, socket.recv(&mut buffer)).await {
                record(&buffer[..n]);
            }
        });
        Ok(Self { recent, task })
    }

    /// Records the messages still queued and stops.
    pub(crate) async fn finish(self) {
        self.task.finish().await;
    }
}

/// The lines of a syslog datagram as a syslog daemon would write them to a file (without the
/// host name): the `<priority>` prefix removed, trailing NULs and newlines dropped.
fn syslog_lines(datagram: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(datagram);
    let text = text.trim_end_matches(['\0', '\n', '\r']);
    let text = match text.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((priority, rest)) if priority.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => text,
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_datagrams_lose_their_priority_only() {
        assert_eq!(
            syslog_lines(b"<22>Dec  4 15:44:45 sm-mta[42]: started\n\0"),
            ["Dec  4 15:44:45 sm-mta[42]: started"]
        );
        assert_eq!(syslog_lines(b"no priority"), ["no priority"]);
        assert_eq!(syslog_lines(b"<x>odd"), ["<x>odd"]);
        assert_eq!(syslog_lines(b"<3>a\nb\n"), ["a", "b"]);
    }

    #[test]
    fn hosts_file_names_the_sut_on_each_address() {
        let text = hosts_file(
            "sut.sender.test",
            &[
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap(),
            ],
        );
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"), "{text}");
        assert!(
            text.contains("192.0.2.10\tsut.sender.test sut\n2001:db8::10\tsut.sender.test sut\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn messages_sent_to_the_socket_become_sut_log_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new();
        let path = dir.path().join("log");
        let receiver = SyslogReceiver::bind("test", &path, log.clone()).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client
            .send_to(b"<22>Dec  4 10:00:00 mta[1]: one", &path)
            .unwrap();
        client
            .send_to(b"<22>Dec  4 10:00:01 mta[1]: two\n", &path)
            .unwrap();
        receiver.finish().await;
        let lines = crate::test_support::sut_log_lines(&log);
        assert_eq!(
            lines,
            ["Dec  4 10:00:00 mta[1]: one", "Dec  4 10:00:01 mta[1]: two"]
        );
    }
}
