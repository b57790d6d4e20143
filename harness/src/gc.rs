//! Finding and removing what runs killed with SIGKILL left behind.
//!
//! Namespaces are anonymous and the SUT dies with the harness, so a killed run leaves only its
//! work directory (`$TMPDIR/mxlab-<run id>-*`) and, at worst, processes still inside one of its
//! network namespaces. Each work directory holds an `owner` file naming the process that
//! created it (pid and start time, so a reused pid is not mistaken for the owner) and a
//! `namespaces` file with the inode numbers of the run's network namespaces.

use std::fs;
use std::path::{Path, PathBuf};

/// Name of the file in a work directory that names its owner.
const OWNER_FILE: &str = "owner";
/// Name of the file in a work directory that lists its network namespaces' inodes.
const NAMESPACES_FILE: &str = "namespaces";
/// Prefix of every work directory.
pub const WORK_DIR_PREFIX: &str = "mxlab-";

/// Why garbage collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A directory or file could not be read or removed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What a collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Work directories removed.
    pub directories: Vec<PathBuf>,
    /// Processes killed (they were inside a removed run's network namespace).
    pub processes: Vec<u32>,
}

/// Marks `dir` as owned by this process.
pub fn write_owner(dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or_default();
    fs::write(dir.join(OWNER_FILE), format!("{pid} {start}\n"))
}

/// Records the inode numbers of the run's network namespaces in `dir`.
pub fn write_namespaces<'n>(
    dir: &Path,
    namespaces: impl IntoIterator<Item = &'n netns::Namespace>,
) -> std::io::Result<()> {
    let mut text = String::new();
    for namespace in namespaces {
        let inode = nix::sys::stat::fstat(namespace.fd())
            .map_err(std::io::Error::from)?
            .st_ino;
        text.push_str(&format!("{inode}\n"));
    }
    fs::write(dir.join(NAMESPACES_FILE), text)
}

/// Removes every work directory in `temp_dir` whose owner is no longer alive, after killing
/// processes that still use it.
pub fn collect(temp_dir: &Path) -> Result<Collected, GcError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| GcError::Io {
            action,
            path,
            source,
        }
    };
    let mut collected = Collected::default();
    for entry in fs::read_dir(temp_dir).map_err(io("read", temp_dir))? {
        let path = entry.map_err(io("read", temp_dir))?.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(WORK_DIR_PREFIX));
        if !is_ours || !path.is_dir() || owner_alive(&path) {
            continue;
        }
        collected.processes.extend(kill_namespace_members(&path));
        fs::remove_dir_all(&path).map_err(io("remove", &path))?;
        collected.directories.push(path);
    }
    Ok(collected)
}

/// Whether the process named in the directory's owner file still runs. A directory without a
/// readable owner file counts as alive while it is younger than a minute (its run may be
/// starting), and as abandoned after that.
fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(OWNER_FILE)) else {
        let age = fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        return age.is_none_or(|age| age.as_secs() < 60);
    };
    let mut fields = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        fields.next().map(str::parse::<u32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    start_time(pid) == Some(start)
}

/// The start time of a process (clock ticks since boot, field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Kills (SIGKILL) every process inside a network namespace listed in `dir`; returns their
/// pids.
fn kill_namespace_members(dir: &Path) -> Vec<u32> {
    let Ok(text) = fs::read_to_string(dir.join(NAMESPACES_FILE)) else {
        return Vec::new();
    };
    let wanted: Vec<String> = text
        .split_whitespace()
        .map(|inode| format!("net:[{inode}]"))
        .collect();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(link) = fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
            let target = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed.push(pid);
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_owner_keeps_its_directory_and_a_dead_one_loses_it() {
        let temp = tempfile::tempdir().unwrap();
        let live = temp.path().join("mxlab-live-1");
        let dead = temp.path().join("mxlab-dead-1");
        let other = temp.path().join("not-ours");
        for dir in [&live, &dead, &other] {
            fs::create_dir(dir).unwrap();
        }
        write_owner(&live).unwrap();
        // A pid that cannot exist (above the kernel's pid_max limit of 2^22).
        fs::write(dead.join(OWNER_FILE), "4194305 1\n").unwrap();
        let collected = collect(temp.path()).unwrap();
        assert_eq!(collected.directories, vec![dead.clone()]);
        assert!(live.exists() && other.exists() && !dead.exists());
    }

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("mxlab-reused-1");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(OWNER_FILE), format!("{} 1\n", std::process::id())).unwrap();
        assert!(!owner_alive(&dir));
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
    }
}
