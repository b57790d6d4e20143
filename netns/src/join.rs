//! Joining namespaces that already exist: entering a network namespace on the calling thread,
//! and running a command inside the namespaces of a running [`Process`].

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;

use nix::sched::CloneFlags;

use crate::Process;

/// Moves the calling thread into the network namespace `ns` (setns) and checks that it arrived
/// (its `/proc/thread-self/ns/net` is that namespace). Sockets the thread makes afterwards
/// belong to `ns`; for a short piece of work prefer [`Namespace::run`](crate::Namespace::run),
/// which does it on a throwaway thread.
pub fn enter_current_thread(ns: BorrowedFd<'_>) -> io::Result<()> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
    let wanted = File::from(ns.try_clone_to_owned()?).metadata()?;
    let here = std::fs::metadata("/proc/thread-self/ns/net")?;
    if (here.dev(), here.ino()) != (wanted.dev(), wanted.ino()) {
        return Err(io::Error::other(
            "setns succeeded but the thread is not in the namespace",
        ));
    }
    Ok(())
}

/// Runs `f` on a short-lived OS thread inside the network namespace `ns` and returns what it
/// returned (a panic in `f` is an error). Sockets made by `f` stay in `ns`.
pub fn run_in<F, R>(ns: BorrowedFd<'_>, f: F) -> io::Result<R>
where
    F: FnOnce() -> io::Result<R> + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// The namespaces of a running [`Process`] spawned with a private mount namespace (and usually
/// `own_pid_namespace`), held open so commands can be run in them later: an open descriptor
/// keeps a namespace alive, so this keeps working after the process stopped.
#[derive(Debug)]
pub struct ProcessNamespaces {
    net: OwnedFd,
    mount: OwnedFd,
    uts: OwnedFd,
    /// The process's `pid_for_children`: with `own_pid_namespace`, the command's PID namespace.
    pid: OwnedFd,
}

impl ProcessNamespaces {
    /// Opens the namespaces of `process` (its `/proc/PID/ns/{mnt,uts,pid_for_children}`) and
    /// duplicates `net`, the network namespace it was spawned in.
    pub fn of(net: BorrowedFd<'_>, process: &Process) -> io::Result<Self> {
        let open = |name: &str| {
            let path = format!("/proc/{}/ns/{name}", process.pid());
            File::open(&path)
                .map(OwnedFd::from)
                .map_err(|e| io::Error::new(e.kind(), format!("opening {path}: {e}")))
        };
        Ok(Self {
            net: net.try_clone_to_owned()?,
            mount: open("mnt")?,
            uts: open("uts")?,
            pid: open("pid_for_children")?,
        })
    }

    /// The network namespace.
    pub fn net(&self) -> BorrowedFd<'_> {
        self.net.as_fd()
    }

    /// Makes `command` run inside these namespaces (network, mount and UTS; with `in_pid` in
    /// the process's PID namespace too, behind a small waiter, so ending that namespace ends the
    /// command and whatever it started). The descriptors must stay open until `command` is
    /// spawned, so `self` must outlive the spawn.
    pub fn enter_before_exec(&self, command: &mut std::process::Command, in_pid: bool) {
        let net = self.net.as_raw_fd();
        let mount = self.mount.as_raw_fd();
        let uts = self.uts.as_raw_fd();
        let pid = if in_pid { self.pid.as_raw_fd() } else { -1 };
        // SAFETY: the closure makes only async-signal-safe syscalls (setns, fork, prctl,
        // close_range, waitpid, kill, _exit) on descriptors owned by `self`, which are
        // close-on-exec and stay open until the spawn (the caller's contract above).
        unsafe {
            command.pre_exec(move || {
                for (fd, kind) in [
                    (net, CloneFlags::CLONE_NEWNET),
                    (mount, CloneFlags::CLONE_NEWNS),
                    (uts, CloneFlags::CLONE_NEWUTS),
                    (pid, CloneFlags::CLONE_NEWPID),
                ] {
                    if fd >= 0 {
                        nix::sched::setns(BorrowedFd::borrow_raw(fd), kind)?;
                    }
                }
                if pid >= 0 {
                    into_pid_namespace()?;
                }
                Ok(())
            });
        }
    }
}

/// After setns(CLONE_NEWPID) in a freshly forked child: only its children join the PID
/// namespace (and a process whose namespace for children differs from its own cannot start
/// threads), so it forks once more. The new child returns to exec the command inside the
/// namespace and dies with its parent; the parent becomes a *waiter* that holds no
/// descriptors, waits for it and exits the same way (re-raising a signal that killed it).
///
/// # Safety
/// Only in a freshly forked, single-threaded child before exec.
unsafe fn into_pid_namespace() -> io::Result<()> {
    // SAFETY: raw syscalls on stack data in a single-threaded child (fork is safe there).
    unsafe {
        let child = libc::fork();
        if child < 0 {
            return Err(io::Error::last_os_error());
        }
        if child == 0 {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
            return Ok(());
        }
        // The waiter: its copies of the pipes (std's exec-status pipe, the caller's stdio)
        // would keep readers waiting; the command has its own.
        libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        let mut status: libc::c_int = 0;
        while libc::waitpid(child, &mut status, 0) < 0 {
            if nix::errno::Errno::last() != nix::errno::Errno::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            127
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_a_file_that_is_no_namespace_fails() {
        let file = File::open("/dev/null").unwrap();
        let err = run_in(file.as_fd(), || Ok(())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}
