//! Processes started inside a network namespace.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Output};
use std::time::Duration;

use nix::sched::CloneFlags;
use tokio::sync::oneshot;

use crate::{Error, Namespace, Result};

/// How long the waiter may take to notice its PID-1 child died before it is killed too.
const INIT_EXIT_PATIENCE: Duration = Duration::from_secs(2);

/// How long the PID namespace's init sleeps between reaping rounds when nothing wakes it (a
/// safety net: SIGCHLD, forwarded signals and the lifeline wake it at once).
const INIT_POLL_MILLIS: libc::c_int = 100;

/// How [`spawn`] isolates the process beyond the network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// If set: the child gets a private mount namespace (unshare CLONE_NEWNS, "/" made recursively
    /// private) with this file bind-mounted over /etc/resolv.conf.
    pub resolv_conf: Option<PathBuf>,
    /// `(source, target)` pairs bind-mounted in this order in the child's private mount
    /// namespace, after `resolv_conf` (so a later pair may cover an earlier one, e.g. `/run`
    /// and then `/etc/resolv.conf` again where that is a link into `/run`). Both must exist.
    /// A non-empty list implies a private mount namespace, as `resolv_conf` does.
    pub bind_mounts: Vec<(PathBuf, PathBuf)>,
    /// If true: the command runs in a new PID namespace, so ending it ends every process it
    /// started; and the namespace ends as soon as the [`Process`] is dropped or the caller dies,
    /// even by SIGKILL.
    ///
    /// Mechanism (done in pre_exec so the command's environment, working directory and stdio
    /// all still apply): after the mount work and prctl(PR_SET_PDEATHSIG, SIGKILL) the forked
    /// child, the *waiter*, blocks SIGINT/SIGTERM/SIGCHLD, unshares CLONE_NEWPID and forks the
    /// namespace's *init* (PID 1, PDEATHSIG SIGKILL again). The init forks the command (PID 2),
    /// which std then execs; neither the waiter nor the init ever execs.
    ///
    /// The init holds the read end of a *lifeline* pipe whose write end only the [`Process`]
    /// holds (close-on-exec, closed at once in every forked child). It polls the lifeline and a
    /// signalfd and reaps every process in the namespace. When the lifeline hangs up (the
    /// Process was dropped, or the caller died) or the command exits, the init exits, and the
    /// kernel SIGKILLs whatever is left in the namespace. PR_SET_PDEATHSIG cannot protect the
    /// command itself: exec of a setuid or file-capability program and any credential change
    /// (Postfix does both) clear it; the init keeps its own because it does neither.
    ///
    /// SIGTERM or SIGINT sent to the init is forwarded to every process in the namespace; once
    /// such a stop signal was forwarded, the init waits for all of them (not just the command)
    /// before it exits. The init passes the command's wait status to the waiter, which exits
    /// the same way, so [`Process`] reports the command's status.
    ///
    /// The command is PID 2, not PID 1: it receives signals like any process (`postfix
    /// start-fg`, for instance, runs `master -s` in the foreground instead of exec'ing
    /// `master -i`, which Postfix allows only as PID 1).
    pub own_pid_namespace: bool,
    /// If set: the child gets its own UTS namespace (unshare CLONE_NEWUTS) with this host name,
    /// so `gethostname(2)` and `uname -n` answer it instead of the machine's name.
    pub hostname: Option<String>,
    /// If set: the child's `/dev` is this directory (created if missing), with the host's
    /// standard device nodes (`null`, `zero`, `full`, `random`, `urandom`, `tty`, `ptmx`),
    /// `/dev/pts`, `/dev/shm` and `/dev/mqueue` bind-mounted into it and the `fd`, `stdin`,
    /// `stdout` and `stderr` links made in it. Whatever else the caller puts there (a `log`
    /// socket, say) is what the child finds in its `/dev`, and nothing the child creates there
    /// reaches the host's `/dev`. Implies a private mount namespace; mounted before
    /// `bind_mounts`, so those may cover parts of it (e.g. `/dev/shm`).
    pub private_dev: Option<PathBuf>,
}

/// The host's device nodes a private `/dev` gets (those that exist).
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "ptmx"];

/// The host's `/dev` subdirectories (usually mount points) a private `/dev` gets.
const DEV_DIRS: &[&str] = &["pts", "shm", "mqueue"];

/// The links every `/dev` has.
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Fills `dir` with the mount points and links of a private `/dev` and returns the bind mounts
/// (source, target, recursive) that make it the child's `/dev`, in order.
fn private_dev_mounts(dir: &Path) -> io::Result<Vec<(PathBuf, PathBuf, bool)>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut mounts = Vec::new();
    let host = Path::new("/dev");
    for name in DEV_NODES {
        let source = host.join(name);
        if std::fs::metadata(&source).is_err() {
            continue;
        }
        let target = dir.join(name);
        if std::fs::symlink_metadata(&target).is_err() {
            std::fs::File::create(&target)?;
        }
        mounts.push((source, target, false));
    }
    for name in DEV_DIRS {
        let source = host.join(name);
        if !source.is_dir() {
            continue;
        }
        let target = dir.join(name);
        std::fs::create_dir_all(&target)?;
        mounts.push((source, target, true));
    }
    for (name, points_to) in DEV_LINKS {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(points_to, &link)?;
        }
    }
    mounts.push((dir.to_owned(), host.to_owned(), true));
    Ok(mounts)
}

/// A process started inside a namespace. Dropping it kills it (SIGKILL) and reaps it.
///
/// With [`SpawnOptions::own_pid_namespace`] the process is a small waiter (a fork of the
/// caller that never execs) whose only child is the init (PID 1) of the new PID namespace,
/// whose child in turn is the command (PID 2); killing the init ends the whole namespace, and
/// so does dropping the Process (the init's lifeline hangs up).
pub struct Process {
    pid: u32,
    pidfd: OwnedFd,
    own_pid_namespace: bool,
    /// The write end of the PID namespace init's lifeline (with `own_pid_namespace`); closing
    /// it makes the init exit, which ends the namespace.
    lifeline: Option<OwnedFd>,
    program: String,
    status: Option<ExitStatus>,
    exit: Option<oneshot::Receiver<io::Result<ExitStatus>>>,
    reaper: Option<std::thread::JoinHandle<()>>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("program", &self.program)
            .field("own_pid_namespace", &self.own_pid_namespace)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// The process id (in the caller's PID namespace). With `own_pid_namespace` this is the
    /// waiter, in the caller's PID namespace: its `/proc/PID/ns/pid_for_children` is the new
    /// PID namespace, its only child the namespace's init (PID 1), whose child is the command
    /// (PID 2).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL; returns once reaped.
    ///
    /// With `own_pid_namespace` the SIGTERM goes to the namespace's init, which forwards it to
    /// every process in the namespace and exits (with the command's status) once they have all
    /// exited; the SIGKILL goes to the init and ends the whole PID namespace.
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        if self.try_exit_status()?.is_some() {
            return Ok(());
        }
        let term_target = if self.own_pid_namespace {
            self.pid_namespace_init(Duration::from_millis(100)).await
        } else {
            Some(
                self.pidfd
                    .try_clone()
                    .map_err(|e| self.error("duplicating the pidfd", e))?,
            )
        };
        if let Some(target) = term_target {
            send_signal(&target, rustix::process::Signal::TERM)
                .map_err(|e| self.error("sending SIGTERM", e))?;
        }
        let Some(mut exit) = self.exit.take() else {
            return Ok(());
        };
        let result = match tokio::time::timeout(grace, &mut exit).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::debug!(pid = self.pid, program = %self.program, "grace period over, sending SIGKILL");
                if self.kill_init() {
                    // The waiter reaps PID 1 and exits by itself; killing it first would leave
                    // PID 1 to be reaped by the system's init, later.
                    if let Ok(result) = tokio::time::timeout(INIT_EXIT_PATIENCE, &mut exit).await {
                        self.record(result.ok())?;
                        return Ok(());
                    }
                }
                let _ = send_signal(&self.pidfd, rustix::process::Signal::KILL);
                exit.await
            }
        };
        self.record(result.ok())?;
        Ok(())
    }

    /// Exit status if it has ended, without waiting.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let Some(exit) = self.exit.as_mut() else {
            return Ok(None);
        };
        match exit.try_recv() {
            Ok(result) => {
                self.exit = None;
                self.record(Some(result))
            }
            Err(oneshot::error::TryRecvError::Empty) => Ok(None),
            Err(oneshot::error::TryRecvError::Closed) => {
                self.exit = None;
                self.record(None)
            }
        }
    }

    /// The child's stdin pipe, if the command was given `Stdio::piped()` for it (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The child's stdout pipe, if the command was given `Stdio::piped()` for it (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The child's stderr pipe, if the command was given `Stdio::piped()` for it (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Stores the reaper's report; `None` means the reaper vanished without one.
    fn record(&mut self, result: Option<io::Result<ExitStatus>>) -> Result<Option<ExitStatus>> {
        match result {
            Some(Ok(status)) => {
                self.status = Some(status);
                Ok(Some(status))
            }
            Some(Err(e)) => Err(self.error("waiting for the process", e)),
            None => Err(self.error(
                "waiting for the process",
                io::Error::other("the reaper thread ended without reporting an exit status"),
            )),
        }
    }

    fn error(&self, action: &str, source: io::Error) -> Error {
        Error::Process {
            pid: self.pid,
            action: format!("{action} (`{}`)", self.program),
            source,
        }
    }

    /// A pidfd for the PID-1 child of the waiter, waiting up to `patience` for it to appear.
    async fn pid_namespace_init(&self, patience: Duration) -> Option<OwnedFd> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(fd) = child_pidfd(self.pid) {
                return Some(fd);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// With a PID namespace: SIGKILL to its init (which ends every process in it). Returns
    /// whether the init was found.
    fn kill_init(&self) -> bool {
        if !self.own_pid_namespace {
            return false;
        }
        match child_pidfd(self.pid) {
            Some(init) => send_signal(&init, rustix::process::Signal::KILL).is_ok(),
            None => false,
        }
    }

    /// SIGKILL (to the PID namespace's init first, if any, so that the waiter reaps it), then
    /// SIGKILL to the process itself. Blocks for at most `INIT_EXIT_PATIENCE`.
    fn kill_now(&self) {
        if self.kill_init() && wait_exit(&self.pidfd, INIT_EXIT_PATIENCE) {
            return;
        }
        let _ = send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if let Some(exit) = self.exit.as_mut() {
            if exit.try_recv().is_ok() {
                return;
            }
        }
        // Hanging up the lifeline alone makes the PID namespace's init exit; the SIGKILL below
        // only makes sure.
        drop(self.lifeline.take());
        self.kill_now();
        // The reaper thread returns right after `wait` reaped the process.
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}

/// Spawns `command` (stdio as the caller set it) inside `namespace`.
///
/// The child is forked by a dedicated OS thread that entered the namespace and stays alive,
/// waiting on the child, for the child's whole life (PR_SET_PDEATHSIG fires when the forking
/// *thread* exits, so if the harness dies the child gets SIGKILL; with
/// [`SpawnOptions::own_pid_namespace`] the namespace's init also watches a lifeline pipe held by
/// the returned [`Process`], since PDEATHSIG does not survive the command changing credentials).
/// A missing program gives [`Error::ProgramNotFound`] naming the program and suggesting the fix.
/// Pipes requested with `Stdio::piped()` are available through [`Process::take_stdout`] and
/// friends.
pub fn spawn(namespace: &Namespace, command: Command, options: SpawnOptions) -> Result<Process> {
    let mut command = command;
    let program = command.get_program().to_string_lossy().into_owned();
    check_program(&command)?;
    let spawn_error = |source: io::Error| Error::Spawn {
        program: program.clone(),
        label: namespace.label().to_owned(),
        source,
    };

    let resolv_conf = match &options.resolv_conf {
        None => None,
        Some(path) => {
            if !path.is_file() {
                return Err(spawn_error(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "resolv_conf {} is not a file: write the generated resolv.conf first",
                        path.display()
                    ),
                )));
            }
            let absolute = std::fs::canonicalize(path).map_err(spawn_error)?;
            Some(cstring(absolute.as_os_str()).map_err(spawn_error)?)
        }
    };
    let lifeline = if options.own_pid_namespace {
        Some(lifeline_pipe().map_err(spawn_error)?)
    } else {
        None
    };
    let dev_mounts = match &options.private_dev {
        Some(dir) => private_dev_mounts(dir).map_err(|e| {
            spawn_error(io::Error::new(
                e.kind(),
                format!("private /dev {}: {e}", dir.display()),
            ))
        })?,
        None => Vec::new(),
    };
    let hostname = options
        .hostname
        .as_deref()
        .map(|name| cstring(OsStr::new(name)))
        .transpose()
        .map_err(spawn_error)?;
    let requested = dev_mounts.iter().cloned().chain(
        options
            .bind_mounts
            .iter()
            .map(|(source, target)| (source.clone(), target.clone(), false)),
    );
    let mut bind_mounts = Vec::with_capacity(dev_mounts.len() + options.bind_mounts.len());
    for (source, target, recursive) in requested {
        let (source, target) = (&source, &target);
        let mut pair = [source, target].into_iter().map(|path| {
            let absolute = std::fs::canonicalize(path).map_err(|e| {
                spawn_error(io::Error::new(
                    e.kind(),
                    format!(
                        "bind mount {} -> {}: {e}",
                        source.display(),
                        target.display()
                    ),
                ))
            })?;
            cstring(absolute.as_os_str()).map_err(spawn_error)
        });
        let (Some(source), Some(target)) = (pair.next(), pair.next()) else {
            unreachable!("two paths");
        };
        bind_mounts.push((source?, target?, recursive));
    }
    let setup = PreExec {
        resolv_conf,
        bind_mounts,
        hostname,
        own_pid_namespace: options.own_pid_namespace,
        lifeline: lifeline.as_ref().map_or(-1, |(read, _)| read.as_raw_fd()),
    };
    let (lifeline_read, lifeline_write) = lifeline.unzip();
    // SAFETY: the closure only makes raw async-signal-safe syscalls (unshare, mount, prctl,
    // sigprocmask, pipe2, signalfd, fork, close_range, poll, read, write, kill, waitpid, _exit)
    // on data prepared before the fork; it does not allocate or take locks.
    unsafe {
        command.pre_exec(move || setup.run());
    }

    let ns_fd = namespace.fd().try_clone_to_owned().map_err(spawn_error)?;
    let label = namespace.label().to_owned();
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let (exit_tx, exit_rx) = oneshot::channel();
    let reaper = std::thread::Builder::new()
        .name("mxlab-proc".into())
        .spawn(move || {
            if let Err(e) = nix::sched::setns(&ns_fd, CloneFlags::CLONE_NEWNET) {
                let _ = started_tx.send(Err(Error::namespace(
                    &label,
                    "entering the namespace (setns)",
                    e.into(),
                )));
                return;
            }
            drop(ns_fd);
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = started_tx.send(Err(Error::Spawn {
                        program: command.get_program().to_string_lossy().into_owned(),
                        label,
                        source: e,
                    }));
                    return;
                }
            };
            let pid = child.id();
            // Opened before `wait`, so it names this child even after its pid is reused.
            let pidfd = match pidfd_open(pid) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = started_tx.send(Err(Error::Process {
                        pid,
                        action: "opening a pidfd".to_owned(),
                        source: e,
                    }));
                    return;
                }
            };
            let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
            if started_tx.send(Ok((pid, pidfd, pipes))).is_err() {
                let _ = child.kill();
            }
            let _ = exit_tx.send(child.wait());
        })
        .map_err(|source| Error::Thread {
            action: format!("starting `{program}`"),
            source,
        })?;

    let started = started_rx.recv().map_err(|_| Error::Thread {
        action: format!("starting `{program}`"),
        source: io::Error::other("the spawner thread ended without reporting"),
    });
    // The fork is done (or failed): only the init may hold the read end now.
    drop(lifeline_read);
    let (pid, pidfd, (stdin, stdout, stderr)) = match started {
        Ok(Ok(started)) => started,
        Ok(Err(e)) | Err(e) => {
            let _ = reaper.join();
            return Err(e);
        }
    };
    tracing::debug!(pid, program = %program, namespace = %namespace.label(), "spawned");
    Ok(Process {
        pid,
        pidfd,
        own_pid_namespace: options.own_pid_namespace,
        lifeline: lifeline_write,
        program,
        status: None,
        exit: Some(exit_rx),
        reaper: Some(reaper),
        stdin,
        stdout,
        stderr,
    })
}

/// Runs a command to completion inside the namespace (no PID namespace) and returns its output
/// (for short tools like `nft` or `ip`). Stdout and stderr are captured unless the command
/// says otherwise; a non-zero exit status is *not* an error (inspect `Output::status`).
pub fn output(namespace: &Namespace, command: Command) -> Result<Output> {
    let mut command = command;
    check_program(&command)?;
    let program = command.get_program().to_string_lossy().into_owned();
    namespace.run(move || command.output())?.map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::ProgramNotFound {
                program: program.clone(),
                searched: String::new(),
            }
        } else {
            Error::Spawn {
                program: program.clone(),
                label: namespace.label().to_owned(),
                source,
            }
        }
    })
}

/// Everything the forked child does before exec, prepared before the fork.
struct PreExec {
    resolv_conf: Option<CString>,
    /// (source, target, recursive) bind mounts, in order.
    bind_mounts: Vec<(CString, CString, bool)>,
    /// The host name of the child's own UTS namespace, if it gets one.
    hostname: Option<CString>,
    own_pid_namespace: bool,
    /// The lifeline's read end (with `own_pid_namespace`; -1 otherwise).
    lifeline: libc::c_int,
}

impl PreExec {
    /// Runs in the forked child: async-signal-safe raw syscalls only.
    fn run(&self) -> io::Result<()> {
        // SAFETY: raw syscalls with NUL-terminated strings and pointer arrays built before the
        // fork; nothing here allocates.
        unsafe {
            if self.resolv_conf.is_some() || !self.bind_mounts.is_empty() {
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
            }
            if let Some(source) = &self.resolv_conf {
                check(libc::mount(
                    source.as_ptr(),
                    c"/etc/resolv.conf".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            for (source, target, recursive) in &self.bind_mounts {
                let flags = if *recursive {
                    libc::MS_BIND | libc::MS_REC
                } else {
                    libc::MS_BIND
                };
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ))?;
            }
            if let Some(name) = &self.hostname {
                check(libc::unshare(libc::CLONE_NEWUTS))?;
                check(libc::sethostname(name.as_ptr(), name.as_bytes().len()))?;
            }
            die_with_parent()?;
            if self.own_pid_namespace {
                start_pid_namespace(self.lifeline)?;
            }
        }
        Ok(())
    }
}

/// The lifeline pipe (close-on-exec): (read end for the init, write end for the [`Process`]).
fn lifeline_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    if read.as_raw_fd() > 2 {
        return Ok((read, write));
    }
    // std's child puts the command's stdio on 0..=2 (over whatever is there), before pre_exec.
    Ok((rustix::io::fcntl_dupfd_cloexec(&read, 3)?, write))
}

/// In the forked child (the waiter): unshares CLONE_NEWPID and forks the namespace's init,
/// which forks the command. Returns `Ok` only in the command (PID 2 of the new namespace), which
/// std then execs; the waiter and the init never return (they `_exit`), except with an error
/// from before the command exists.
///
/// # Safety
/// Only to be called in a freshly forked, single-threaded child before exec.
unsafe fn start_pid_namespace(lifeline: libc::c_int) -> io::Result<()> {
    // SAFETY: raw syscalls on stack data, as the caller guarantees a single-threaded child.
    unsafe {
        // The waiter and the init take these only through waitpid and a signalfd (a polite stop
        // is for the command, and a dying waiter would SIGKILL the init through PDEATHSIG); the
        // command gets the original mask back.
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut blocked);
        libc::sigaddset(&mut blocked, libc::SIGINT);
        libc::sigaddset(&mut blocked, libc::SIGTERM);
        libc::sigaddset(&mut blocked, libc::SIGCHLD);
        let mut original: libc::sigset_t = std::mem::zeroed();
        check(libc::sigprocmask(libc::SIG_BLOCK, &blocked, &mut original))?;
        check(libc::unshare(libc::CLONE_NEWPID))?;
        // The init reports the command's raw wait status through this pipe: an init cannot die
        // of a signal it sends itself, so its own exit status could not say "killed by signal".
        let mut status_pipe: [libc::c_int; 2] = [-1; 2];
        check(libc::pipe2(
            status_pipe.as_mut_ptr(),
            libc::O_CLOEXEC | libc::O_NONBLOCK,
        ))?;
        let init = libc::fork();
        if init < 0 {
            return Err(io::Error::last_os_error());
        }
        if init == 0 {
            libc::close(status_pipe[0]);
            return run_init(lifeline, status_pipe[1], &blocked, &original);
        }
        // The waiter: close everything but the status pipe's read end: std's exec-status pipe
        // (so the parent sees success once the command has exec'd), caller pipes (so readers see
        // EOF with the command), and the lifeline (only the harness and the init may hold it).
        close_all_except(&mut [status_pipe[0]]);
        let mut status: libc::c_int = 0;
        loop {
            let reaped = libc::waitpid(init, &mut status, 0);
            if reaped == init {
                break;
            }
            if reaped < 0 && errno() != libc::EINTR {
                libc::_exit(127);
            }
        }
        // The init wrote the status before exiting; without one (it was SIGKILLed, or failed
        // before the command existed) the init's own status stands.
        let mut reported: libc::c_int = 0;
        let read = libc::read(
            status_pipe[0],
            (&mut reported as *mut libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        );
        if read == std::mem::size_of::<libc::c_int>() as isize {
            status = reported;
        }
        exit_like(status)
    }
}

/// In the freshly forked init (PID 1 of the new namespace): forks the command and returns `Ok`
/// in it; the init itself watches the lifeline and reaps until it `_exit`s.
///
/// # Safety
/// Only to be called in a freshly forked, single-threaded child before exec.
unsafe fn run_init(
    lifeline: libc::c_int,
    status_out: libc::c_int,
    signals: &libc::sigset_t,
    original: &libc::sigset_t,
) -> io::Result<()> {
    // SAFETY: raw syscalls on stack data, as the caller guarantees a single-threaded child.
    unsafe {
        // Cleared by fork: set it again. It holds for the init, which never execs and never
        // changes credentials.
        die_with_parent()?;
        let signal_fd = libc::signalfd(-1, signals, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        check(signal_fd)?;
        let command = libc::fork();
        if command < 0 {
            return Err(io::Error::last_os_error());
        }
        if command == 0 {
            // The command (PID 2): std execs it; the descriptors it inherited from the init are
            // all close-on-exec.
            check(libc::sigprocmask(
                libc::SIG_SETMASK,
                original,
                std::ptr::null_mut(),
            ))?;
            return Ok(());
        }
        close_all_except(&mut [lifeline, signal_fd, status_out]);
        init_loop(command, lifeline, signal_fd, status_out)
    }
}

/// The init's life: reap everything, forward stop signals, and exit when the lifeline hangs up
/// or the command is done.
///
/// # Safety
/// Only in the init, a forked single-threaded child that never execs.
unsafe fn init_loop(
    command: libc::pid_t,
    lifeline: libc::c_int,
    signal_fd: libc::c_int,
    status_out: libc::c_int,
) -> ! {
    /// The raw wait status of a process killed by SIGKILL.
    const KILLED: libc::c_int = libc::SIGKILL;
    // SAFETY: raw syscalls on stack data, in a single-threaded process.
    unsafe {
        let mut stopping = false;
        let mut command_status: Option<libc::c_int> = None;
        // Reported at once, so the waiter has it even if the init is killed while it waits for
        // the other processes.
        let mut reported = false;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: lifeline,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: signal_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ready = libc::poll(fds.as_mut_ptr(), 2, INIT_POLL_MILLIS);
            if ready < 0 && errno() != libc::EINTR {
                finish_init(status_out, KILLED, reported);
            }
            if fds[0].revents != 0 {
                // Hung up (or anything else): the Process was dropped or the harness died. Our
                // exit makes the kernel SIGKILL everything in the namespace.
                finish_init(status_out, KILLED, reported);
            }
            if fds[1].revents != 0 {
                let mut infos: [libc::signalfd_siginfo; 4] = std::mem::zeroed();
                loop {
                    let read = libc::read(
                        signal_fd,
                        infos.as_mut_ptr().cast(),
                        std::mem::size_of_val(&infos),
                    );
                    if read <= 0 {
                        break;
                    }
                    let count = read as usize / std::mem::size_of::<libc::signalfd_siginfo>();
                    for info in &infos[..count] {
                        let signal = info.ssi_signo as libc::c_int;
                        if signal != libc::SIGCHLD {
                            // Every process in the namespace but the init itself.
                            libc::kill(-1, signal);
                            stopping = true;
                        }
                    }
                }
            }
            let mut others_left = true;
            loop {
                let mut status: libc::c_int = 0;
                let reaped = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if reaped == command {
                    command_status = Some(status);
                } else if reaped == 0 {
                    break;
                } else if reaped < 0 {
                    if errno() == libc::EINTR {
                        continue;
                    }
                    others_left = false; // ECHILD: the namespace is empty but for us
                    break;
                }
            }
            if let Some(status) = command_status {
                if !reported {
                    report_status(status_out, status);
                    reported = true;
                }
                // Without a stop request the command's end is the namespace's end (leftovers
                // are SIGKILLed); after one, everybody gets to finish first.
                if !stopping || !others_left {
                    finish_init(status_out, status, reported);
                }
            }
        }
    }
}

/// Reports `status` to the waiter (unless `reported` already) and exits the init, which ends the
/// PID namespace.
///
/// # Safety
/// Only in the init.
unsafe fn finish_init(status_out: libc::c_int, status: libc::c_int, reported: bool) -> ! {
    // SAFETY: a write (see report_status), then _exit.
    unsafe {
        if !reported {
            report_status(status_out, status);
        }
        libc::_exit(0)
    }
}

/// Writes a raw wait status to the waiter's status pipe (once per init: the waiter reads one).
///
/// # Safety
/// Only in the init.
unsafe fn report_status(status_out: libc::c_int, status: libc::c_int) {
    // SAFETY: write of a stack value to a pipe with room for it.
    unsafe {
        libc::write(
            status_out,
            (&status as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        );
    }
}

/// Exits the way a process with raw wait `status` did (re-raising its signal).
///
/// # Safety
/// Only in the waiter, a forked single-threaded child that never execs.
unsafe fn exit_like(status: libc::c_int) -> ! {
    // SAFETY: raw syscalls on stack data.
    unsafe {
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(127)
    }
}

/// Closes every file descriptor but those in `keep` (negative entries are ignored).
///
/// # Safety
/// Only in a forked single-threaded child: it closes descriptors others may own.
unsafe fn close_all_except(keep: &mut [libc::c_int]) {
    keep.sort_unstable(); // in place, no allocation
    let close_range = |first: libc::c_uint, last: libc::c_uint| {
        // SAFETY: close_range on a range of descriptors, no flags.
        unsafe {
            libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint);
        }
    };
    let mut first: libc::c_uint = 0;
    for &fd in keep.iter() {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd < first {
            continue;
        }
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, libc::c_uint::MAX);
}

fn errno() -> libc::c_int {
    // SAFETY: the calling thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// Asks the kernel to SIGKILL this process when the thread that forked it exits
/// (`PR_SET_PDEATHSIG`; fork clears it). One raw prctl, safe in a forked child.
fn die_with_parent() -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(io::Error::from)
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Fails with [`Error::ProgramNotFound`] unless the command's program can be executed.
fn check_program(command: &Command) -> Result<()> {
    let program = Path::new(command.get_program());
    if program.as_os_str().as_bytes().contains(&b'/') {
        let path = match (program.is_relative(), command.get_current_dir()) {
            (true, Some(dir)) => dir.join(program),
            _ => program.to_owned(),
        };
        if is_executable(&path) {
            return Ok(());
        }
        return Err(Error::ProgramNotFound {
            program: program.display().to_string(),
            searched: String::new(),
        });
    }
    let path_var = command
        .get_envs()
        .find(|(key, _)| *key == "PATH")
        .map(|(_, value)| value.map(OsStr::to_owned))
        .unwrap_or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    if std::env::split_paths(&path_var).any(|dir| is_executable(&dir.join(program))) {
        return Ok(());
    }
    Err(Error::ProgramNotFound {
        program: program.display().to_string(),
        searched: format!(" in PATH={}", path_var.to_string_lossy()),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no pid {pid}")))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Waits up to `timeout` for the process behind `pidfd` to exit (not necessarily be reaped).
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

fn send_signal(pidfd: &OwnedFd, signal: rustix::process::Signal) -> io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, signal) {
        Err(rustix::io::Errno::SRCH) => Ok(()), // already gone
        other => Ok(other?),
    }
}

/// A pidfd for the single child of `pid` (the PID-1 process the waiter started), checked
/// to still be that child after opening, so a reused pid is never signalled.
fn child_pidfd(pid: u32) -> Option<OwnedFd> {
    let children_path = format!("/proc/{pid}/task/{pid}/children");
    let first_child = |text: String| {
        text.split_whitespace()
            .next()
            .and_then(|c| c.parse::<u32>().ok())
    };
    let child = first_child(std::fs::read_to_string(&children_path).ok()?)?;
    let fd = pidfd_open(child).ok()?;
    let still = std::fs::read_to_string(&children_path)
        .ok()
        .and_then(first_child);
    (still == Some(child)).then_some(fd)
}
