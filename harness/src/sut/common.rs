//! What the MTA drivers share: reaching the injection listener inside the SUT namespace,
//! probing for the MTA's greeting, running the MTAs' own tools inside the namespaces of a
//! running instance, and making the directories of an instance.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::events::{EventKind, EventLog};
use crate::family::Family;
use crate::sut::{smtp, OutgoingMessage, SutError};

/// The address every driver's injection listener binds inside the SUT namespace.
pub(crate) const LISTEN_ADDRESS: &str = "127.0.0.1:2525";

/// [`LISTEN_ADDRESS`] as a socket address.
pub(crate) fn listen_address() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2525))
}

/// The injection listener of an MTA that listens on `family` only: [`LISTEN_ADDRESS`] for
/// IPv4 (and for both families), `[::1]:2525` for an IPv6-only MTA.
pub(crate) fn listen_address_for(family: Option<Family>) -> SocketAddr {
    match family {
        Some(Family::Ipv6) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 2525, 0, 0)),
        _ => listen_address(),
    }
}

/// Connects to `address` from a socket made on a short-lived thread inside the network
/// namespace `ns` and hands it to tokio. Connecting over loopback is immediate (accepted or
/// refused), so the caller is blocked only briefly.
pub(crate) fn connect_in(
    ns: BorrowedFd<'_>,
    address: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = netns::run_in(ns, || {
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1))
    })?;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// An injection failure of `sut` for `message`, with what went wrong.
pub(crate) fn inject_error(
    sut: &'static str,
    message: &OutgoingMessage,
    detail: String,
) -> SutError {
    SutError::Inject {
        sut,
        from: message.from.clone(),
        to: message.to.join(", "),
        detail,
    }
}

/// Hands `message` to the SUT's SMTP listener at `listen` inside the network namespace `net`
/// and returns the reply to the end of DATA; any refusal is an error naming the step.
pub(crate) async fn send_over_smtp(
    sut: &'static str,
    net: BorrowedFd<'_>,
    listen: SocketAddr,
    message: &OutgoingMessage,
) -> Result<String, SutError> {
    let stream = connect_in(net, listen)
        .map_err(|e| inject_error(sut, message, format!("connecting to {listen}: {e}")))?;
    smtp::send(stream, message)
        .await
        .map_err(|detail| inject_error(sut, message, detail))
}

/// Records that `message` was handed to the SUT, which replied `reply`.
pub(crate) fn record_injection(log: &EventLog, message: &OutgoingMessage, reply: &str) {
    log.record(EventKind::MessageInjected {
        from: message.from.clone(),
        to: message.to.clone(),
        reply: reply.to_string(),
    });
}

/// One readiness probe: connects to `listen` inside `ns`, expects a 220 greeting
/// within 2 s, says QUIT and hangs up without waiting for the 221 (Exim 4.96 holds its 221 back
/// for 200 ms, which would only inflate the measured start-up time). The error says what
/// happened instead.
pub(crate) async fn probe_greeting(ns: BorrowedFd<'_>, listen: SocketAddr) -> Result<(), String> {
    let stream = connect_in(ns, listen).map_err(|e| format!("connect: {e}"))?;
    let mut stream = tokio::io::BufReader::new(stream);
    let greeting = tokio::time::timeout(Duration::from_secs(2), smtp::read_reply(&mut stream))
        .await
        .map_err(|_| "no greeting within 2 s".to_string())??;
    if greeting.code != 220 {
        return Err(format!("greeting was {:?}", greeting.text));
    }
    let _ = stream.get_mut().write_all(b"QUIT\r\n").await;
    let _ = stream.get_mut().shutdown().await;
    Ok(())
}

/// Runs one of the MTA's tools to completion (at most `timeout`) and returns its standard
/// output; a failure to run, a timeout or a non-zero exit is a [`SutError::Command`] quoting
/// its output.
pub(crate) async fn run_tool(
    sut: &'static str,
    mut command: tokio::process::Command,
    command_line: String,
    timeout: Duration,
) -> Result<String, SutError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| SutError::Command {
            sut,
            command: command_line.clone(),
            status: format!("no exit within {} s", timeout.as_secs()),
            output: String::new(),
        })?
        .map_err(|e| SutError::Command {
            sut,
            command: command_line.clone(),
            status: format!("cannot run: {e}"),
            output: String::new(),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SutError::Command {
            sut,
            command: command_line,
            status: output.status.to_string(),
            output: format!("{}{}", stderr.trim(), stdout.trim()),
        });
    }
    Ok(stdout)
}

/// Makes `work_dir` traversable (`o+x`, `g+x`) for the MTA's unprivileged processes.
pub(crate) fn make_traversable(sut: &'static str, work_dir: &Path) -> Result<(), SutError> {
    let meta = std::fs::metadata(work_dir)
        .map_err(|e| io_error(sut, &format!("read {}", work_dir.display()), e))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(work_dir, std::fs::Permissions::from_mode(mode | 0o011))
            .map_err(|e| io_error(sut, &format!("make {} traversable", work_dir.display()), e))?;
    }
    Ok(())
}

/// Creates `path` (and its parents) with `mode` and the given owner and group.
pub(crate) fn make_dir(
    sut: &'static str,
    path: &Path,
    owner: Option<nix::unistd::Uid>,
    group: Option<nix::unistd::Gid>,
    mode: u32,
) -> Result<(), SutError> {
    std::fs::create_dir_all(path)
        .map_err(|e| io_error(sut, &format!("create {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(sut, &format!("chmod {mode:o} {}", path.display()), e))?;
    nix::unistd::chown(path, owner, group)
        .map_err(|e| io_error(sut, &format!("chown {}", path.display()), e.into()))
}

/// A [`SutError::Io`].
pub(crate) fn io_error(sut: &'static str, action: &str, source: std::io::Error) -> SutError {
    SutError::Io {
        sut,
        action: action.to_string(),
        source,
    }
}

/// Fails with [`SutError::NotInstalled`] naming the first of `paths` that is missing.
pub(crate) fn require_files(sut: &'static str, paths: &[&str]) -> Result<(), SutError> {
    for path in paths {
        if !Path::new(path).exists() {
            return Err(not_installed(sut, path));
        }
    }
    Ok(())
}

/// A [`SutError::NotInstalled`] for `what` with the standard fix.
pub(crate) fn not_installed(sut: &'static str, what: &str) -> SutError {
    SutError::NotInstalled {
        sut,
        missing: what.into(),
        fix: INSTALL_FIX.into(),
    }
}

/// What to do when an MTA is missing.
pub(crate) const INSTALL_FIX: &str = "run .ci/install-deps.sh as root";

/// Host PIDs of the live (non-zombie) processes in the PID namespace named by `ns` (a
/// `pid:[inode]` link text).
#[cfg(test)]
pub(crate) fn processes_in(ns: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/pid"))
            .ok()
            .as_deref()
            != Some(ns)
        {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_constant_and_address_agree() {
        assert_eq!(listen_address().to_string(), LISTEN_ADDRESS);
    }

    #[test]
    fn missing_files_are_named_with_the_fix() {
        let err = require_files("Exim", &["/", "/nonexistent/mxlab"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Exim is not installed (no /nonexistent/mxlab): run .ci/install-deps.sh as root"
        );
    }
}
