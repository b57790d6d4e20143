//! Rootless mode: mxlab as an ordinary user, root only inside a user namespace of its own.
//!
//! [`enter`] is the first call of the `mxlab` binary's `main` and of every integration test's
//! `main`, before tokio or any other thread starts (`unshare(CLONE_NEWUSER)` fails with EINVAL
//! in a multi-threaded process, and the run's network namespaces can be entered only from
//! inside the user namespace that owns them). As root it does nothing. As an ordinary user it:
//!
//! 1. checks the prerequisites (unprivileged user namespaces enabled, `newuidmap` and
//!    `newgidmap` in `PATH`, the user's lines in `/etc/subuid` and `/etc/subgid`); a missing one
//!    is a [`RootlessError`] naming the problem and its fix, before anything was made;
//! 2. forks a helper that waits on a pipe, unshares a user namespace, and lets the helper (still
//!    outside, where the setuid `newuidmap`/`newgidmap` work) map root inside to the user and
//!    ids 1… to the user's subordinate ids, so the MTAs' system users (postfix, Debian-exim,
//!    opensmtpd…) exist inside as mapped ids;
//! 3. becomes uid/gid 0 inside and unshares a private mount namespace for the process;
//! 4. covers three host trees that appear owned by nobody inside (their owner, the host's root,
//!    is not mapped) with root-owned-inside copies on a private tmpfs: `/etc/postfix` (else
//!    Postfix skips `dynamicmaps.cf`, "owned or writable by non-root users"), `/etc/exim4` (else
//!    Exim distrusts `trusted_configs`: "exim user lost privilege for using -C option") and
//!    OpenSMTPD's `usr/sbin` (a setgid bit of an unmapped group is ignored: `smtpctl` "must be
//!    setgid opensmtpq"). The copies keep the host's numeric owners and modes, which inside
//!    name the same users and groups; they vanish with the process's mount namespace.
//!
//! Everything else works unchanged inside: network namespaces owned by the user namespace,
//! veth links, nft, per-namespace sysctls, bind mounts, PID namespaces, port 25, and the MTAs
//! switching to their own users. Files a killed run leaves in its work directory are owned by
//! subordinate ids; `mxlab gc`, entering the same mapping, removes them.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sched::CloneFlags;

/// The trees covered by root-owned-inside copies in rootless mode (see the module docs).
pub const STAND_INS: [&str; 3] = [
    "/etc/postfix",
    "/etc/exim4",
    "/opt/mxlab/opensmtpd/usr/sbin",
];

/// Subordinate ids a user needs: inside ids 1–65536, which covers every system user an MTA
/// switches to (and `nobody`, 65534).
pub const NEEDED_IDS: u32 = 65536;

/// How this process has its privileges; set by [`enter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Started as root: nothing was changed.
    Root,
    /// Started as an ordinary user, now root inside a user namespace of its own.
    Rootless(Mapping),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Root => f.write_str("root"),
            Mode::Rootless(mapping) => write!(
                f,
                "rootless (user {} uid {}: root inside a user namespace, ids 1–{} mapped to \
                 uids {}–{} and gids {}–{})",
                mapping.user,
                mapping.uid,
                mapping.uids.count,
                mapping.uids.start,
                mapping.uids.end(),
                mapping.gids.start,
                mapping.gids.end()
            ),
        }
    }
}

/// The ids mapped into the user namespace: root inside is the user, ids 1… inside are the
/// subordinate ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The user's name.
    pub user: String,
    /// The user's uid outside.
    pub uid: u32,
    /// The user's gid outside.
    pub gid: u32,
    /// The subordinate uids (from `/etc/subuid`).
    pub uids: IdRange,
    /// The subordinate gids (from `/etc/subgid`).
    pub gids: IdRange,
}

/// A range of subordinate ids, as one line of `/etc/subuid` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

impl IdRange {
    /// The last id of the range.
    pub fn end(self) -> u64 {
        u64::from(self.start) + u64::from(self.count) - 1
    }
}

/// Why rootless mode cannot be entered. Each prerequisite's message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// A sysctl disables unprivileged user namespaces.
    #[error(
        "not root, and unprivileged user namespaces are disabled ({setting} = {value}): as root, \
         run `sysctl -w {setting}={fix}` (or run mxlab as root)"
    )]
    UserNamespacesDisabled {
        /// The sysctl.
        setting: &'static str,
        /// Its value.
        value: String,
        /// The value that enables them.
        fix: &'static str,
    },
    /// `newuidmap` or `newgidmap` is not in `PATH`.
    #[error(
        "not root, and rootless mode needs {program} (package uidmap), not found in PATH: as \
         root, run `apt-get install uidmap` or .ci/install-deps.sh (or run mxlab as root)"
    )]
    NoUidmap {
        /// The program missing.
        program: &'static str,
    },
    /// The user has no usable line in `/etc/subuid` or `/etc/subgid`.
    #[error(
        "not root, and user {user} (uid {uid}) has no {NEEDED_IDS} subordinate {kind} in {}: as \
         root, run `usermod --add-subuids {next}-{last} --add-subgids {next}-{last} {user}` \
         (or run mxlab as root)",
        file.display(),
        last = u64::from(*next) + u64::from(NEEDED_IDS) - 1
    )]
    NoSubordinateIds {
        /// The user's name.
        user: String,
        /// The user's uid.
        uid: u32,
        /// "uids" or "gids".
        kind: &'static str,
        /// `/etc/subuid` or `/etc/subgid`.
        file: PathBuf,
        /// The first id of a free range to suggest.
        next: u32,
    },
    /// The user has no name in the password database.
    #[error("not root, and uid {uid} has no name in /etc/passwd: rootless mode looks users up in /etc/subuid by name (or run mxlab as root)")]
    NoUserName {
        /// The uid.
        uid: u32,
    },
    /// Other threads run already: the user namespace cannot be entered any more.
    #[error("rootless mode must be entered before any thread starts, and this process has {threads} threads: call mxlab::rootless::enter first in main")]
    Threads {
        /// How many threads the process has.
        threads: usize,
    },
    /// A system call on the way in failed.
    #[error("rootless mode: {action} failed: {source}")]
    System {
        /// What was being done.
        action: String,
        /// The error.
        source: std::io::Error,
    },
    /// `newuidmap` or `newgidmap` refused the mapping.
    #[error("rootless mode: mapping the subordinate ids failed: {detail}")]
    Map {
        /// What the helper reported.
        detail: String,
    },
}

impl RootlessError {
    fn system(action: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        RootlessError::System {
            action: action.into(),
            source: source.into(),
        }
    }
}

/// What [`enter`] did, once it has succeeded.
static MODE: OnceLock<Mode> = OnceLock::new();

/// How long entering rootless mode took (from the fork of the helper to the last stand-in).
static SETUP_TIME: OnceLock<std::time::Duration> = OnceLock::new();

/// How long [`enter`] took to enter rootless mode (the fork of the id-mapping helper, the
/// namespaces and the stand-ins), if it did.
pub fn setup_time() -> Option<std::time::Duration> {
    SETUP_TIME.get().copied()
}

/// The mode [`enter`] established, if it was called and succeeded.
pub fn mode() -> Option<&'static Mode> {
    MODE.get()
}

/// As root: nothing. As an ordinary user: enters a user namespace with the user's subordinate
/// ids mapped and becomes root inside (see the module docs). Must be called before any thread
/// starts; a second call returns the first call's mode.
pub fn enter() -> Result<Mode, RootlessError> {
    if let Some(mode) = MODE.get() {
        return Ok(mode.clone());
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(MODE.get_or_init(|| Mode::Root).clone());
    }
    let prepared = Prerequisites::check(&System::host())?;
    let threads = thread_count()?;
    if threads != 1 {
        return Err(RootlessError::Threads { threads });
    }
    let begun = std::time::Instant::now();
    // Read while the host's owners are still visible as they are.
    let snapshots = STAND_INS
        .iter()
        .map(Path::new)
        .filter(|path| path.is_dir())
        .map(Snapshot::take)
        .collect::<Result<Vec<_>, _>>()?;
    map_ids(&prepared)?;
    become_root()?;
    private_mounts()?;
    for snapshot in &snapshots {
        snapshot.restore()?;
    }
    let _ = SETUP_TIME.set(begun.elapsed());
    Ok(MODE
        .get_or_init(|| Mode::Rootless(prepared.mapping))
        .clone())
}

/// Every missing prerequisite of rootless mode for the current (real) user, each with its fix;
/// empty when rootless mode can be entered. For `mxlab doctor`.
pub fn problems() -> Vec<RootlessError> {
    Prerequisites::problems(&System::host())
}

/// Where the prerequisites are read from (the host's files; other files in tests).
#[derive(Debug, Clone)]
struct System {
    /// `/proc/sys`.
    proc_sys: PathBuf,
    /// `/etc/subuid`.
    subuid: PathBuf,
    /// `/etc/subgid`.
    subgid: PathBuf,
    /// The `PATH` searched for newuidmap and newgidmap.
    path: Option<OsString>,
    /// The user's uid, gid and name.
    uid: u32,
    gid: u32,
    user: Option<String>,
}

impl System {
    fn host() -> Self {
        let uid = nix::unistd::getuid();
        System {
            proc_sys: "/proc/sys".into(),
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
            path: std::env::var_os("PATH"),
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            user: nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|user| user.name),
        }
    }
}

/// Everything rootless mode needs, found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prerequisites {
    newuidmap: PathBuf,
    newgidmap: PathBuf,
    mapping: Mapping,
}

impl Prerequisites {
    /// The prerequisites, or the first one missing.
    fn check(system: &System) -> Result<Prerequisites, RootlessError> {
        Self::gather(system).map_err(|mut problems| problems.remove(0))
    }

    /// Every missing prerequisite.
    fn problems(system: &System) -> Vec<RootlessError> {
        Self::gather(system).err().unwrap_or_default()
    }

    fn gather(system: &System) -> Result<Prerequisites, Vec<RootlessError>> {
        let mut problems = Vec::new();
        problems.extend(user_namespaces_disabled(&system.proc_sys));
        let newuidmap = find_program(system.path.as_ref(), "newuidmap");
        let newgidmap = find_program(system.path.as_ref(), "newgidmap");
        if newuidmap.is_none() {
            problems.push(RootlessError::NoUidmap {
                program: "newuidmap",
            });
        } else if newgidmap.is_none() {
            problems.push(RootlessError::NoUidmap {
                program: "newgidmap",
            });
        }
        let Some(user) = system.user.clone() else {
            problems.push(RootlessError::NoUserName { uid: system.uid });
            return Err(problems);
        };
        let mut range = |file: &Path, kind| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let found = subordinate_range(&text, &user, system.uid);
            if found.is_none() {
                problems.push(RootlessError::NoSubordinateIds {
                    user: user.clone(),
                    uid: system.uid,
                    kind,
                    file: file.to_path_buf(),
                    next: next_free(&text),
                });
            }
            found
        };
        let uids = range(&system.subuid, "uids");
        let gids = range(&system.subgid, "gids");
        match (newuidmap, newgidmap, uids, gids) {
            (Some(newuidmap), Some(newgidmap), Some(uids), Some(gids)) if problems.is_empty() => {
                Ok(Prerequisites {
                    newuidmap,
                    newgidmap,
                    mapping: Mapping {
                        user,
                        uid: system.uid,
                        gid: system.gid,
                        uids,
                        gids,
                    },
                })
            }
            _ => Err(problems),
        }
    }
}

/// The sysctls that disable unprivileged user namespaces, with the value that enables them:
/// Debian's switch, the limit itself, and Ubuntu's AppArmor restriction (under which a user
/// namespace is made but gets no capabilities).
fn user_namespaces_disabled(proc_sys: &Path) -> Option<RootlessError> {
    let read = |key: &str| {
        std::fs::read_to_string(proc_sys.join(key))
            .ok()
            .map(|value| value.trim().to_owned())
    };
    if let Some(value) = read("kernel/unprivileged_userns_clone").filter(|v| v == "0") {
        return Some(RootlessError::UserNamespacesDisabled {
            setting: "kernel.unprivileged_userns_clone",
            value,
            fix: "1",
        });
    }
    if let Some(value) = read("user/max_user_namespaces").filter(|v| v == "0") {
        return Some(RootlessError::UserNamespacesDisabled {
            setting: "user.max_user_namespaces",
            value,
            fix: "15000",
        });
    }
    if let Some(value) = read("kernel/apparmor_restrict_unprivileged_userns").filter(|v| v == "1") {
        return Some(RootlessError::UserNamespacesDisabled {
            setting: "kernel.apparmor_restrict_unprivileged_userns",
            value,
            fix: "0",
        });
    }
    None
}

/// `name` in one of the directories of `path`, if it is an executable file there.
fn find_program(path: Option<&OsString>, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The first range of at least [`NEEDED_IDS`] ids that `/etc/subuid`-style `text` gives the
/// user (by name or by uid).
fn subordinate_range(text: &str, user: &str, uid: u32) -> Option<IdRange> {
    let uid = uid.to_string();
    subordinate_lines(text)
        .filter(|(owner, _)| *owner == user || *owner == uid)
        .map(|(_, range)| range)
        .find(|range| range.count >= NEEDED_IDS)
}

/// The `(owner, range)` of each well-formed line.
fn subordinate_lines(text: &str) -> impl Iterator<Item = (&str, IdRange)> {
    text.lines().filter_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let start = fields.next()?.parse().ok()?;
        let count = fields.next()?.parse().ok()?;
        (!owner.is_empty() && !owner.starts_with('#')).then_some((owner, IdRange { start, count }))
    })
}

/// The first id after every range in `text` (at least 100000, where `useradd` starts).
fn next_free(text: &str) -> u32 {
    subordinate_lines(text)
        .map(|(_, range)| range.end() + 1)
        .max()
        .map_or(100_000, |next| {
            u32::try_from(next.max(100_000)).unwrap_or(u32::MAX)
        })
}

/// How many threads this process has (`Threads:` in /proc/self/status).
fn thread_count() -> Result<usize, RootlessError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| RootlessError::system("reading /proc/self/status", e))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            RootlessError::system(
                "reading the thread count in /proc/self/status",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })
}

/// Unshares a user namespace and has a helper outside map the ids into it.
///
/// The helper is forked first and waits on a pipe; the parent unshares CLONE_NEWUSER and
/// writes one byte; the helper runs `newuidmap PID 0 UID 1 1 START COUNT` and `newgidmap`
/// likewise on the parent and exits with their verdict, reporting a failure's output on a
/// second pipe. If the unshare fails, the pipe closes without the byte and the helper exits.
fn map_ids(prepared: &Prerequisites) -> Result<(), RootlessError> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| RootlessError::system("creating a pipe", e))
    };
    let (go_read, go_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    let parent = std::process::id();
    // SAFETY: the caller checked that this process has exactly one thread, so the child is a
    // complete copy of it: no lock or allocator state can be held by a thread that does not
    // exist in the child, and the child may allocate, spawn the helpers and exit normally.
    match unsafe { nix::unistd::fork() }.map_err(|e| RootlessError::system("forking", e))? {
        nix::unistd::ForkResult::Child => {
            drop(go_write);
            drop(report_read);
            let code = match helper(parent, go_read, prepared) {
                Ok(()) => 0,
                Err(detail) => {
                    let _ = std::fs::File::from(report_write).write_all(detail.as_bytes());
                    1
                }
            };
            // Nothing was written to stdout before `enter`, so no buffered output is repeated.
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(go_read);
            drop(report_write);
            let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
            let mut go = std::fs::File::from(go_write);
            if unshared.is_ok() {
                // The helper's exit status says whether the mapping was made.
                let _ = go.write_all(b"1");
            }
            drop(go);
            let status = nix::sys::wait::waitpid(child, None)
                .map_err(|e| RootlessError::system("waiting for the id-mapping helper", e))?;
            let mut report = String::new();
            let _ = std::fs::File::from(report_read).read_to_string(&mut report);
            unshared.map_err(|e| {
                RootlessError::system("unsharing a user namespace (unshare CLONE_NEWUSER)", e)
            })?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(RootlessError::Map {
                    detail: if report.is_empty() {
                        format!("the helper ended with {other:?}")
                    } else {
                        report.trim().to_owned()
                    },
                }),
            }
        }
    }
}

/// The forked helper: waits for the parent's byte, then maps its ids.
fn helper(parent: u32, go: std::os::fd::OwnedFd, prepared: &Prerequisites) -> Result<(), String> {
    let mut byte = [0u8; 1];
    match std::fs::File::from(go).read(&mut byte) {
        Ok(1) => {}
        // The parent could not unshare: it reports that itself.
        _ => return Ok(()),
    }
    let mapping = &prepared.mapping;
    for (program, id, range) in [
        (&prepared.newuidmap, mapping.uid, mapping.uids),
        (&prepared.newgidmap, mapping.gid, mapping.gids),
    ] {
        let args = [
            parent.to_string(),
            "0".into(),
            id.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ];
        let output = std::process::Command::new(program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if !output.status.success() {
            return Err(format!(
                "`{} {}` {}: {}",
                program.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Sets the real, effective and saved uid and gid to 0 inside the user namespace.
fn become_root() -> Result<(), RootlessError> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| RootlessError::system("becoming gid 0 inside (setresgid)", e))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| RootlessError::system("becoming uid 0 inside (setresuid)", e))?;
    Ok(())
}

/// A private mount namespace for the process, so that its mounts (the stand-ins, and what the
/// lab mounts) never reach the host.
fn private_mounts() -> Result<(), RootlessError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| RootlessError::system("unsharing a mount namespace", e))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| RootlessError::system("making / private in the mount namespace", e))
}

/// A directory tree read into memory, with its numeric owners and modes.
#[derive(Debug)]
struct Snapshot {
    root: PathBuf,
    mode: u32,
    entries: Vec<Entry>,
}

/// One file, directory or symbolic link below a snapshot's root.
#[derive(Debug)]
struct Entry {
    /// Relative to the root.
    path: PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
    kind: EntryKind,
}

#[derive(Debug)]
enum EntryKind {
    Directory,
    File(Vec<u8>),
    Symlink(PathBuf),
}

impl Snapshot {
    /// Reads `root` recursively (directories before their contents). A file this user cannot
    /// read is left out, a directory it cannot list is copied empty: root inside could not
    /// read them either.
    fn take(root: &Path) -> Result<Snapshot, RootlessError> {
        let io = |action: &str, path: &Path| {
            let action = format!("{action} {}", path.display());
            move |e| RootlessError::system(action, e)
        };
        let mode = std::fs::metadata(root).map_err(io("reading", root))?.mode() & 0o7777;
        let mut entries = Vec::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(dir) = pending.pop() {
            let absolute = root.join(&dir);
            let listing = match std::fs::read_dir(&absolute) {
                Ok(listing) => listing,
                // Unreadable to this user, and so to root inside: copied empty.
                Err(e)
                    if e.kind() == std::io::ErrorKind::PermissionDenied && dir != Path::new("") =>
                {
                    continue
                }
                Err(e) => return Err(io("reading", &absolute)(e)),
            };
            let mut names: Vec<_> = listing.flatten().map(|entry| entry.file_name()).collect();
            names.sort();
            for name in names {
                let path = dir.join(&name);
                let full = root.join(&path);
                let meta = std::fs::symlink_metadata(&full).map_err(io("reading", &full))?;
                let kind = if meta.is_dir() {
                    pending.push(path.clone());
                    EntryKind::Directory
                } else if meta.file_type().is_symlink() {
                    EntryKind::Symlink(std::fs::read_link(&full).map_err(io("reading", &full))?)
                } else if meta.is_file() {
                    match std::fs::read(&full) {
                        Ok(data) => EntryKind::File(data),
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
                        Err(e) => return Err(io("reading", &full)(e)),
                    }
                } else {
                    continue;
                };
                entries.push(Entry {
                    path,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                    kind,
                });
            }
        }
        Ok(Snapshot {
            root: root.to_path_buf(),
            mode,
            entries,
        })
    }

    /// Mounts a tmpfs over the root and writes the tree back with its numeric owners (the
    /// same names inside) and modes.
    fn restore(&self) -> Result<(), RootlessError> {
        let io = |action: &str, path: &Path| {
            let action = format!("{action} {}", path.display());
            move |e: std::io::Error| RootlessError::system(action, e)
        };
        nix::mount::mount(
            Some("mxlab-stand-in"),
            &self.root,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NODEV,
            Some(format!("mode={:o}", self.mode).as_str()),
        )
        .map_err(|e| io("mounting a tmpfs over", &self.root)(e.into()))?;
        for entry in &self.entries {
            let path = self.root.join(&entry.path);
            match &entry.kind {
                EntryKind::Directory => std::fs::create_dir(&path),
                EntryKind::File(data) => std::fs::write(&path, data),
                EntryKind::Symlink(target) => std::os::unix::fs::symlink(target, &path),
            }
            .map_err(io("writing", &path))?;
            if entry.uid != 0 || entry.gid != 0 {
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &path,
                    Some(nix::unistd::Uid::from_raw(entry.uid)),
                    Some(nix::unistd::Gid::from_raw(entry.gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io("changing the owner of", &path)(e.into()))?;
            }
            // After the chown, which clears set-id bits.
            if !matches!(entry.kind, EntryKind::Symlink(_)) {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
                    .map_err(io("changing the mode of", &path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system with the given files, PATH and user.
    fn system(dir: &Path, subuid: &str, path: Option<&Path>) -> System {
        std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
        std::fs::create_dir_all(dir.join("sys/user")).unwrap();
        std::fs::write(dir.join("subuid"), subuid).unwrap();
        std::fs::write(dir.join("subgid"), subuid).unwrap();
        System {
            proc_sys: dir.join("sys"),
            subuid: dir.join("subuid"),
            subgid: dir.join("subgid"),
            path: path.map(|p| p.as_os_str().to_owned()),
            uid: 1001,
            gid: 1001,
            user: Some("alice".into()),
        }
    }

    /// A directory with executable newuidmap and newgidmap.
    fn uidmap_dir(dir: &Path) -> PathBuf {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["newuidmap", "newgidmap"] {
            std::fs::write(bin.join(name), "").unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        bin
    }

    #[test]
    fn everything_present_gives_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let bin = uidmap_dir(dir.path());
        let system = system(
            dir.path(),
            "bob:100000:65536\n1001:165536:65536\n",
            Some(&bin),
        );
        let found = Prerequisites::check(&system).unwrap();
        assert_eq!(found.newuidmap, bin.join("newuidmap"));
        assert_eq!(
            found.mapping.uids,
            IdRange {
                start: 165536,
                count: 65536
            },
            "matched by uid"
        );
        assert!(Prerequisites::problems(&system).is_empty());
    }

    #[test]
    fn a_missing_subuid_line_names_a_free_range_to_add() {
        let dir = tempfile::tempdir().unwrap();
        let bin = uidmap_dir(dir.path());
        let system = system(
            dir.path(),
            "bob:100000:65536\nalice:300000:1000\n",
            Some(&bin),
        );
        let problems = Prerequisites::problems(&system);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            format!(
                "not root, and user alice (uid 1001) has no 65536 subordinate uids in {}: as \
                 root, run `usermod --add-subuids 301000-366535 --add-subgids 301000-366535 \
                 alice` (or run mxlab as root)",
                dir.path().join("subuid").display()
            )
        );
        assert!(problems[1].to_string().contains("subordinate gids"));
    }

    #[test]
    fn missing_uidmap_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let system = system(dir.path(), "alice:100000:65536\n", Some(&empty));
        let err = Prerequisites::check(&system).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not root, and rootless mode needs newuidmap (package uidmap), not found in PATH: \
             as root, run `apt-get install uidmap` or .ci/install-deps.sh (or run mxlab as root)"
        );
        let none = System {
            path: None,
            ..system
        };
        assert!(matches!(
            Prerequisites::check(&none),
            Err(RootlessError::NoUidmap {
                program: "newuidmap"
            })
        ));
    }

    #[test]
    fn disabled_user_namespaces_name_the_sysctl() {
        for (key, value, says) in [
            (
                "kernel/unprivileged_userns_clone",
                "0\n",
                "(kernel.unprivileged_userns_clone = 0): as root, run `sysctl -w kernel.unprivileged_userns_clone=1`",
            ),
            (
                "user/max_user_namespaces",
                "0\n",
                "(user.max_user_namespaces = 0): as root, run `sysctl -w user.max_user_namespaces=15000`",
            ),
            (
                "kernel/apparmor_restrict_unprivileged_userns",
                "1\n",
                "run `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let bin = uidmap_dir(dir.path());
            let system = system(dir.path(), "alice:100000:65536\n", Some(&bin));
            std::fs::write(system.proc_sys.join(key), value).unwrap();
            let err = Prerequisites::check(&system).unwrap_err().to_string();
            assert!(err.starts_with("not root, and unprivileged user namespaces are disabled"));
            assert!(err.contains(says), "{err}");
            // Enabled values are fine.
            std::fs::write(system.proc_sys.join(key), if value == "0\n" { "1\n" } else { "0\n" }).unwrap();
            assert!(Prerequisites::check(&system).is_ok(), "{key}");
        }
    }

    #[test]
    fn subordinate_lines_by_name_or_uid_and_malformed_lines_skipped() {
        let text = "# comment\nbroken\nalice:x:1\nalice:100000:100\nalice:200000:65536\n";
        assert_eq!(
            subordinate_range(text, "alice", 5),
            Some(IdRange {
                start: 200000,
                count: 65536
            }),
            "the first range that is big enough"
        );
        assert_eq!(subordinate_range(text, "bob", 5), None);
        assert_eq!(next_free(""), 100_000);
        assert_eq!(next_free(text), 265_536);
    }

    #[test]
    fn a_snapshot_keeps_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(
            root.join("sub/file"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/file", root.join("link")).unwrap();
        let snapshot = Snapshot::take(&root).unwrap();
        let paths: Vec<_> = snapshot
            .entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(paths, ["link", "sub", "sub/file"]);
        assert!(matches!(&snapshot.entries[2].kind, EntryKind::File(data) if data == b"x"));
        assert_eq!(snapshot.entries[2].mode, 0o640);
        assert!(
            matches!(&snapshot.entries[0].kind, EntryKind::Symlink(t) if t == Path::new("sub/file"))
        );
    }
}
