//! The accelerated clock inside the SUT: libfaketime preloaded into every MTA process.
//!
//! libfaketime (Debian package `faketime`) replaces the C library's clock reads and scales the
//! timeouts of poll, select, epoll_wait, nanosleep, alarm, timer_settime and friends by the
//! rate in `FAKETIME="+0 xN"`. It is inherited through the environment, so each MTA's
//! environment filter must let it through (Postfix `import_environment`, Exim
//! `keep_environment`). What it cannot reach: kernel timers (TCP SYN retries and
//! retransmission), `setitimer`, `epoll_pwait2`, processes started by a setuid exec (the
//! loader drops `LD_PRELOAD` for AT_SECURE), static and Go binaries. The self-check in
//! `sut::clockcheck` catches a process that escaped.
//!
//! All processes of one MTA must share one clock: libfaketime keeps its start in a shared
//! memory object and a semaphore named by `FAKETIME_SHARED`. Left to itself, the first
//! preloaded process creates them as `/dev/shm/faketime_{sem,shm}_PID`, mode 0600: a process
//! that has given up root (Exim's queue runner, re-executed as `Debian-exim`) cannot open
//! them and silently starts a clock of its own; PIDs repeat in every PID namespace and the
//! files survive a kill, so a later run would find stale ones; and a shell wrapper never
//! exports the variable. So mxlab makes both objects itself, readable and writable by every
//! user, in a directory of the run's work directory that is bind-mounted over `/dev/shm` in
//! the SUT's private mount namespace ([`SharedClock`]), and names them in `FAKETIME_SHARED`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::clock::ClockRate;
use crate::sut::SutError;

/// Where Debian's `faketime` package puts the library.
pub const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// The library's file name as it appears in `/proc/PID/maps`.
pub const LIBRARY_NAME: &str = "libfaketime.so";
/// Where POSIX shared memory and named semaphores live.
pub const SHM_DIR: &str = "/dev/shm";
/// The shared clock's semaphore (`/dev/shm/sem.NAME` for glibc's `sem_open("/NAME")`).
const SEMAPHORE: &str = "faketime_sem_mxlab";
/// The shared clock's memory object.
const SHARED_MEMORY: &str = "faketime_shm_mxlab";

/// The variables that carry the clock into a process and its children, in the order an
/// environment filter should list them.
pub const VARIABLES: [&str; 5] = [
    "LD_PRELOAD",
    "FAKETIME",
    "NO_FAKE_STAT",
    "FAKETIME_SHARED",
    "TZ",
];

/// Checks that libfaketime is installed.
pub fn check_installed(sut: &'static str) -> Result<(), SutError> {
    if Path::new(LIBRARY).is_file() {
        Ok(())
    } else {
        Err(SutError::NotInstalled {
            sut,
            missing: PathBuf::from(LIBRARY),
            fix: "install libfaketime (`apt-get install faketime`, done by .ci/install-deps.sh), \
                  or run on the real clock with --clock real"
                .into(),
        })
    }
}

/// The environment that puts a process on the world clock at `rate`; empty on the real clock.
///
/// `NO_FAKE_STAT=1` keeps file times real: Postfix compares queue-file times with its own
/// clock reads, and a scaled `stat` skews them. `FAKETIME_SHARED` names the objects of
/// [`SharedClock`].
pub fn environment(rate: ClockRate) -> Vec<(&'static str, String)> {
    if !rate.is_accelerated() {
        return Vec::new();
    }
    vec![
        ("LD_PRELOAD", LIBRARY.to_string()),
        ("FAKETIME", format!("+0 x{}", rate.times())),
        ("NO_FAKE_STAT", "1".to_string()),
        ("FAKETIME_SHARED", format!("/{SEMAPHORE} /{SHARED_MEMORY}")),
        // The self-check reads the MTA's log stamps as UTC.
        ("TZ", "UTC".to_string()),
    ]
}

/// The shared clock of one SUT: a directory in its work directory holding libfaketime's
/// semaphore and shared memory, bind-mounted over `/dev/shm` in the SUT's mount namespace.
pub struct SharedClock;

impl SharedClock {
    /// On an accelerated clock: makes `WORK_DIR/shm` (mode 1777) with the semaphore (value 1)
    /// and the shared memory (start time unset, so the first process sets it) that
    /// `FAKETIME_SHARED` names, both mode 0666, and returns the bind mount that puts the
    /// directory over `/dev/shm`. Nothing on the real clock.
    pub fn prepare(
        sut: &'static str,
        rate: ClockRate,
        work_dir: &Path,
    ) -> Result<Vec<(PathBuf, PathBuf)>, SutError> {
        if !rate.is_accelerated() {
            return Ok(Vec::new());
        }
        let dir = work_dir.join("shm");
        let io = |what: &Path, source: std::io::Error| SutError::Io {
            sut,
            action: format!("prepare the shared clock {}", what.display()),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| io(&dir, e))?;
        for (name, contents) in [
            (format!("sem.{SEMAPHORE}"), semaphore()),
            (SHARED_MEMORY.to_string(), shared_memory()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|e| io(&path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                .map_err(|e| io(&path, e))?;
        }
        Ok(vec![(dir, PathBuf::from(SHM_DIR))])
    }
}

/// A glibc named semaphore (x86-64 `sem_t`, 32 bytes) with the value 1 and no waiters, shared
/// between processes, as `sem_open(name, O_CREAT, mode, 1)` writes it.
fn semaphore() -> Vec<u8> {
    let mut sem = vec![0u8; 32];
    sem[..8].copy_from_slice(&1u64.to_ne_bytes());
    sem
}

/// libfaketime 0.9.10's `struct ft_shared_s` (x86-64): `ticks` and `file_idx` zero, then the
/// start time as four `timespec`s (real, monotonic, monotonic raw, boot time) with
/// `tv_nsec = -1`, meaning "not set yet".
fn shared_memory() -> Vec<u8> {
    let mut shared = vec![0u8; 16];
    for _ in 0..4 {
        shared.extend_from_slice(&0i64.to_ne_bytes());
        shared.extend_from_slice(&(-1i64).to_ne_bytes());
    }
    shared
}

/// Refuses a timer that uses whole-second `alarm()` and would round to no timer at all at
/// `rate` (libfaketime divides the seconds and truncates: a 5 s alarm at x10 becomes alarm(0),
/// which cancels the alarm).
pub fn check_alarm_timer(
    sut: &'static str,
    setting: &str,
    world: std::time::Duration,
    rate: ClockRate,
) -> Result<(), SutError> {
    if !rate.is_accelerated() || world.as_secs() >= u64::from(rate.times()) {
        return Ok(());
    }
    Err(SutError::BadSetting {
        sut,
        key: setting.to_string(),
        reason: format!(
            "{sut} times it with alarm(), which counts whole seconds: {} at {rate} is {:.2} s of \
             wall time, which rounds to alarm(0), no timeout at all. Use at least {} s, a \
             slower clock (--clock x{}) or --clock real",
            humantime::format_duration(world),
            rate.to_wall(world).as_secs_f64(),
            rate.times(),
            world.as_secs().max(1),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_real_clock_needs_nothing() {
        assert!(environment(ClockRate::REAL).is_empty());
        let dir = tempfile::tempdir().unwrap();
        assert!(SharedClock::prepare("x", ClockRate::REAL, dir.path())
            .unwrap()
            .is_empty());
        assert!(!dir.path().join("shm").exists());
    }

    #[test]
    fn an_accelerated_clock_preloads_the_library_at_its_rate() {
        let rate: ClockRate = "x100".parse().unwrap();
        let env = environment(rate);
        assert!(env.contains(&("FAKETIME", "+0 x100".to_string())));
        assert!(env.contains(&("LD_PRELOAD", LIBRARY.to_string())));
        assert!(env.contains(&(
            "FAKETIME_SHARED",
            "/faketime_sem_mxlab /faketime_shm_mxlab".to_string()
        )));
        let dir = tempfile::tempdir().unwrap();
        let mounts = SharedClock::prepare("x", rate, dir.path()).unwrap();
        assert_eq!(
            mounts,
            vec![(dir.path().join("shm"), PathBuf::from("/dev/shm"))]
        );
        for name in ["sem.faketime_sem_mxlab", "faketime_shm_mxlab"] {
            let meta = std::fs::metadata(dir.path().join("shm").join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o666, "{name}");
        }
    }

    #[test]
    fn an_alarm_timer_that_rounds_to_zero_is_refused_with_the_fix() {
        let rate: ClockRate = "x100".parse().unwrap();
        assert!(check_alarm_timer("Exim", "t", Duration::from_secs(300), rate).is_ok());
        assert!(check_alarm_timer("Exim", "t", Duration::from_secs(5), ClockRate::REAL).is_ok());
        let err = check_alarm_timer(
            "Exim",
            "remote_smtp.connect_timeout",
            Duration::from_secs(30),
            rate,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("remote_smtp.connect_timeout"), "{err}");
        assert!(err.contains("alarm(0)"), "{err}");
        assert!(err.contains("--clock x30"), "{err}");
    }
}
