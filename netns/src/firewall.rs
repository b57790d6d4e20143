//! nftables inside a namespace, by running `nft -f -` with a generated script.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;

use crate::{Error, Namespace, Result};

/// Runs nftables scripts inside one namespace.
///
/// Holds its own duplicate of the namespace's file descriptor, so it can outlive the borrow of
/// the [`Namespace`] (e.g. to delete a table later) — and keeps the namespace alive while it
/// lives.
#[derive(Debug)]
pub struct Firewall {
    label: String,
    fd: OwnedFd,
}

impl Firewall {
    /// A firewall handle for `ns`.
    pub fn new(ns: &Namespace) -> Result<Firewall> {
        let fd = ns
            .fd()
            .try_clone_to_owned()
            .map_err(|e| Error::namespace(ns.label(), "duplicating the namespace descriptor", e))?;
        Ok(Firewall {
            label: ns.label().to_owned(),
            fd,
        })
    }

    /// The namespace's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Applies `script` with `nft -f -` inside the namespace: one atomic transaction, all of it
    /// or nothing. `action` names the change in errors (e.g. "add table inet mxlab_fault_0").
    pub fn apply(&self, action: &str, script: &str) -> Result<()> {
        let output = self.nft(&["-f", "-"], Some(script), action)?;
        if output.status.success() {
            tracing::trace!(label = %self.label, action, "nft applied");
            Ok(())
        } else {
            Err(Error::Nft {
                label: self.label.clone(),
                action: action.to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// `nft list ruleset` inside the namespace.
    pub fn ruleset(&self) -> Result<String> {
        let action = "list ruleset";
        let output = self.nft(&["list", "ruleset"], None, action)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Nft {
                label: self.label.clone(),
                action: action.to_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    fn nft(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        action: &str,
    ) -> Result<std::process::Output> {
        let fd = self.fd.as_fd();
        let label = self.label.as_str();
        let result = std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("mxlab-nft".into())
                .spawn_scoped(
                    scope,
                    move || -> Result<io::Result<std::process::Output>> {
                        nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                            Error::namespace(label, "entering the namespace (setns)", e.into())
                        })?;
                        let run = || {
                            let mut child = Command::new("nft")
                                .args(args)
                                .stdin(if stdin.is_some() {
                                    Stdio::piped()
                                } else {
                                    Stdio::null()
                                })
                                .stdout(Stdio::piped())
                                .stderr(Stdio::piped())
                                .spawn()?;
                            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                                pipe.write_all(text.as_bytes())?;
                            }
                            child.wait_with_output()
                        };
                        Ok(run())
                    },
                )
                .map_err(|source| Error::Thread {
                    action: format!("running nft in network namespace {label}"),
                    source,
                })?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })?;
        result.map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::ProgramNotFound {
                    program: "nft".to_owned(),
                    searched: String::new(),
                }
            } else {
                Error::Spawn {
                    program: format!("nft ({action})"),
                    label: self.label.clone(),
                    source,
                }
            }
        })
    }
}
