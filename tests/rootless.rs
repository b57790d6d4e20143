//! Rootless mode end to end: the built `mxlab` run by other users through `setpriv`, as an
//! ordinary user would run it without sudo.
//!
//! - Bad input: a user without an `/etc/subuid` line, and a `PATH` without `newuidmap`, each
//!   get one line naming the problem and the fix, exit status 2, and nothing left behind.
//! - An ordinary user with subordinate ids (`MXLAB_ROOTLESS_USER`, which `.ci/run` creates as
//!   `mxtester`) gets the same verdicts as root, without the warnings of files that look
//!   nobody-owned inside, and a run of theirs killed with SIGKILL leaves nothing after their
//!   `mxlab gc`.
//!
//! These need real root (to become other users); as an ordinary user they are reported as
//! ignored with the reason (failed under `MXLAB_REQUIRE_ALL=1`).

#[allow(dead_code)] // needs_root and runtime: these tests need real root and no tokio
mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed};
use mxlab::rootless::Mode;
use mxlab::sut::SutKind;

/// The ordinary user to run mxlab as.
const USER_VARIABLE: &str = "MXLAB_ROOTLESS_USER";

/// `nobody`: an ordinary user without subordinate ids.
const NOBODY: u32 = 65534;

/// What an MTA logs when a file it trusts looks owned by someone else (the stand-ins prevent
/// these in rootless mode).
const FOREIGN_OWNER_WARNINGS: [&str; 3] = [
    "owned or writable by non-root users",
    "lost privilege",
    "must be setgid",
];

/// Held by each test that runs mxlab as the ordinary user, so that what one leaves behind
/// (processes and work directories of that user) is not confused with another's live run.
static AS_USER: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    AS_USER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The built `mxlab`, copied once to a directory every user can read (the checkout may be
/// below a directory other users cannot enter, as root's home is).
fn mxlab() -> &'static Path {
    static STAGED: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = STAGED.get_or_init(|| {
        let dir = shared_dir(None);
        let path = dir.path().join("mxlab");
        std::fs::copy(env!("CARGO_BIN_EXE_mxlab"), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    });
    path
}

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// A directory under /tmp that every user can read (and `owner` may write).
fn shared_dir(owner: Option<&nix::unistd::User>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rootless-test-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(user) = owner {
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    }
    dir
}

/// `command` as `uid`/`gid` (groups cleared), through setpriv.
fn as_user(uid: u32, gid: u32, init_groups: bool) -> Command {
    // By its full path: the command may get a PATH without it.
    let setpriv = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("setpriv"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| "setpriv".into());
    let mut command = Command::new(setpriv);
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    command.arg(if init_groups {
        "--init-groups"
    } else {
        "--clear-groups"
    });
    command.arg(mxlab());
    command
}

/// `mxlab ARGS` as the ordinary user.
fn as_ordinary(user: &nix::unistd::User, args: &[&str]) -> Command {
    let mut command = as_user(user.uid.as_raw(), user.gid.as_raw(), true);
    command
        .args(args)
        .env("HOME", &user.dir)
        .env("USER", &user.name)
        .env_remove("TMPDIR")
        .current_dir("/");
    command
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `mxlab run` as nobody with `path` as PATH and an empty private TMPDIR; returns its
/// stderr after checking the exit status 2, the single line and the empty TMPDIR.
fn bad_input(path: &str) -> Result<String, Failed> {
    let scenarios = shared_dir(None);
    let scenario = scenarios.path().join("ok.toml");
    std::fs::write(&scenario, common::STUCK_SCENARIO).unwrap();
    let temp = shared_dir(None);
    let output = as_user(NOBODY, NOBODY, false)
        .args(["run", "--sut", "reference"])
        .arg(&scenario)
        .env("PATH", path)
        .env("TMPDIR", temp.path())
        .current_dir("/")
        .output()
        .map_err(|e| format!("setpriv (util-linux): {e}"))?;
    let stderr = stderr_of(&output);
    if output.status.code() != Some(2) {
        return Err(format!("exit status {:?}, not 2: {stderr}", output.status).into());
    }
    if stderr.lines().count() != 1 {
        return Err(format!("not one line: {stderr}").into());
    }
    let left: Vec<_> = std::fs::read_dir(temp.path()).unwrap().flatten().collect();
    if !left.is_empty() {
        return Err(format!("left behind in TMPDIR: {left:?}").into());
    }
    Ok(stderr)
}

fn without_a_subuid_entry_the_fix_is_named() -> Result<(), Failed> {
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    assert!(
        !subuid
            .lines()
            .any(|l| l.starts_with("nobody:") || l.starts_with("65534:")),
        "nobody must have no subordinate ids for this test"
    );
    let stderr = bad_input(&std::env::var("PATH").unwrap_or_default())?;
    for says in [
        "error: not root, and user nobody (uid 65534) has no 65536 subordinate uids in /etc/subuid",
        "as root, run `usermod --add-subuids ",
        "or run mxlab as root",
    ] {
        if !stderr.contains(says) {
            return Err(format!("{says:?} missing in: {stderr}").into());
        }
    }
    Ok(())
}

fn without_uidmap_the_fix_is_named() -> Result<(), Failed> {
    let empty = shared_dir(None);
    let stderr = bad_input(&empty.path().to_string_lossy())?;
    let says = "error: not root, and rootless mode needs newuidmap (package uidmap), not found in \
                PATH: as root, run `apt-get install uidmap`";
    if !stderr.starts_with(says) {
        return Err(format!("{says:?} missing in: {stderr}").into());
    }
    Ok(())
}

/// `(scenario, sut, status)` of each run in an mxlab-report/1 file, and the SUT log lines
/// that say a file looks foreign-owned.
fn statuses(json: &Path) -> (Vec<(String, String, String)>, Vec<String>) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let mut runs = Vec::new();
    let mut warnings = Vec::new();
    for run in report["runs"].as_array().unwrap() {
        let field = |name: &str| run[name].as_str().unwrap_or_default().to_owned();
        runs.push((field("scenario"), field("sut"), field("status")));
        for event in run["events"].as_array().unwrap() {
            let text = event.to_string();
            if FOREIGN_OWNER_WARNINGS.iter().any(|w| text.contains(w)) {
                warnings.push(format!("{} [{}]: {text}", field("scenario"), field("sut")));
            }
        }
    }
    (runs, warnings)
}

fn a_rootless_run_judges_as_root_does(user: nix::unistd::User) -> Result<(), Failed> {
    let _alone = one_at_a_time();
    let out = shared_dir(Some(&user));
    // Copies the user can read.
    let scenarios: Vec<String> = ["smtp/v6-greeting-421.toml", "net/v6-blackhole.toml"]
        .iter()
        .map(|name| {
            let copy = out.path().join(name.replace('/', "_"));
            std::fs::copy(scenario_dir().join(name), &copy).unwrap();
            copy.to_string_lossy().into_owned()
        })
        .collect();
    let mut args = vec![
        "run",
        "-j",
        "2",
        "--sut",
        "postfix,exim,opensmtpd,reference",
    ];
    args.extend(scenarios.iter().map(String::as_str));
    let root_json = out.path().join("root.json");
    let user_json = out.path().join("user.json");
    let root = Command::new(mxlab())
        .args(&args)
        .arg("--json")
        .arg(&root_json)
        .output()
        .unwrap();
    let begun = Instant::now();
    let rootless = as_ordinary(&user, &args)
        .arg("--json")
        .arg(&user_json)
        .output()
        .unwrap();
    println!("rootless: 8 runs in {:.2}s", begun.elapsed().as_secs_f64());
    for (who, output) in [("root", &root), ("rootless", &rootless)] {
        if output.status.code() != Some(0) {
            return Err(format!(
                "{who}: exit status {:?}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                stderr_of(output)
            )
            .into());
        }
    }
    let (root_runs, root_warnings) = statuses(&root_json);
    let (user_runs, user_warnings) = statuses(&user_json);
    assert_eq!(root_runs.len(), 8);
    assert_eq!(user_runs, root_runs, "the same verdicts");
    assert!(root_warnings.is_empty(), "{root_warnings:#?}");
    assert!(user_warnings.is_empty(), "{user_warnings:#?}");
    Ok(())
}

/// A shaped path needs `/dev/net/tun`. Where the ordinary user may open it, the rootless run
/// passes as root's does; where it may not (mode 0600), the run is a harness error that names
/// the device and the fix, exits 2 with the timeline so far, and leaves nothing behind.
fn a_shaped_path_without_tun_access_names_the_fix(user: nix::unistd::User) -> Result<(), Failed> {
    let _alone = one_at_a_time();
    let out = shared_dir(Some(&user));
    let scenario = out.path().join("v6-slow-path.toml");
    std::fs::copy(scenario_dir().join("shaping/v6-slow-path.toml"), &scenario).unwrap();
    let scenario = scenario.to_string_lossy().into_owned();
    let user_may_open = Command::new("runuser")
        .args([
            "-u",
            &user.name,
            "--",
            "test",
            "-r",
            "/dev/net/tun",
            "-a",
            "-w",
            "/dev/net/tun",
        ])
        .status()
        .map_err(|e| format!("runuser: {e}"))?
        .success();
    let output = as_ordinary(&user, &["run", "--sut", "reference", &scenario])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), stderr_of(&output));
    if user_may_open {
        if output.status.code() != Some(0) || !stdout.contains("PASS") {
            return Err(format!("{:?}\n{stdout}{stderr}", output.status).into());
        }
    } else {
        let said = format!("{stdout}{stderr}");
        // An ERROR (the harness could not judge the MTA) exits 2, with the lab's timeline.
        if output.status.code() != Some(2)
            || !said.contains("cannot open /dev/net/tun")
            || !said.contains("timeline:")
            || !said.contains("run as root, or let this user read and write /dev/net/tun")
        {
            return Err(format!("{:?}\n{said}", output.status).into());
        }
    }
    // The run has exited; what it started may take a moment to be reaped.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = left_by(user.uid.as_raw());
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("left behind: {left:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes running as `uid` and `/tmp/mxlab-*` directories it owns.
fn left_by(uid: u32) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let runs_as = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok());
        if runs_as == Some(uid) {
            left.push(format!("process {}", entry.file_name().to_string_lossy()));
        }
    }
    for entry in std::fs::read_dir("/tmp").unwrap().flatten() {
        let owned = entry.metadata().is_ok_and(|meta| meta.uid() == uid);
        if owned && entry.file_name().to_string_lossy().starts_with("mxlab-") {
            left.push(entry.path().display().to_string());
        }
    }
    left
}

/// Live (not zombie) processes inside any of the network namespaces `net:[INODE]`.
fn live_members(namespaces: &BTreeSet<String>) -> Vec<String> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if !namespaces.contains(link.to_string_lossy().as_ref()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            members.push(stat);
        }
    }
    members
}

/// Owners of every file below `dir`.
fn owners(dir: &Path) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(meta) = entry.path().symlink_metadata() {
                found.insert(meta.uid());
                if meta.is_dir() {
                    pending.push(entry.path());
                }
            }
        }
    }
    found
}

fn a_killed_rootless_run_leaves_nothing_after_gc(user: nix::unistd::User) -> Result<(), Failed> {
    let _alone = one_at_a_time();
    let scenarios = shared_dir(None);
    let scenario = scenarios.path().join("stuck.toml");
    std::fs::write(&scenario, common::STUCK_SCENARIO).unwrap();
    let mut child = as_ordinary(&user, &["run", "--sut", "postfix"])
        .arg(&scenario)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // setpriv execs mxlab: the child's pid is mxlab's.
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let work_dir = loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(
                format!("the rootless run ended ({status}) before it was caught mid-way").into(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the rootless run did not come up within 20 s".into());
        }
        if let Some(dir) = common::stuck_run_work_dir(pid) {
            break dir;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let namespaces = common::run_namespaces(&work_dir);
    let owned_by = owners(&work_dir);
    assert!(
        owned_by
            .iter()
            .any(|uid| *uid != user.uid.as_raw() && *uid != 0),
        "Postfix's files are owned by a subordinate uid: {owned_by:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let gc = as_ordinary(&user, &["gc"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&gc.stdout);
    assert!(gc.status.success(), "{stdout}{}", stderr_of(&gc));
    assert!(
        stdout.contains(&format!("removed {}", work_dir.display())),
        "{stdout}"
    );
    assert!(!work_dir.exists(), "{} is gone", work_dir.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members = live_members(&namespaces);
        if members.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("left in the run's namespaces: {members:#?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ordinary user named by `MXLAB_ROOTLESS_USER`, or why there is none.
fn ordinary_user() -> Result<nix::unistd::User, String> {
    let name = std::env::var(USER_VARIABLE).map_err(|_| {
        format!("set {USER_VARIABLE} to an ordinary user with /etc/subuid and /etc/subgid entries (.ci/run creates mxtester)")
    })?;
    let user = nix::unistd::User::from_name(&name)
        .ok()
        .flatten()
        .ok_or_else(|| format!("{USER_VARIABLE}={name}: no such user"))?;
    if user.uid.is_root() {
        return Err(format!("{USER_VARIABLE}={name} is root"));
    }
    Ok(user)
}

fn main() {
    common::enter();
    let args = Arguments::from_args();
    let real_root = (mxlab::rootless::mode() != Some(&Mode::Root))
        .then(|| "needs real root (runs mxlab as other users through setpriv)".to_owned());
    let no_uidmap = ["/usr/bin/newuidmap", "/usr/bin/newgidmap"]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} missing: apt-get install uidmap"));
    let user = real_root.clone().map_or_else(ordinary_user, Err);
    let runs_cannot = user.as_ref().err().cloned().or_else(|| {
        ["postfix", "exim", "opensmtpd"]
            .iter()
            .map(|name| name.parse::<SutKind>().expect("built in"))
            .find_map(|sut| sut.check_installed().err().map(|e| e.to_string()))
    });
    let runs_cannot_reference = user.as_ref().err().cloned();
    let (user1, user2, user3) = (user.clone(), user.clone(), user);
    let trials = vec![
        common::trial(
            "bad_input::without_a_subuid_entry_the_fix_is_named",
            real_root.clone().or(no_uidmap),
            without_a_subuid_entry_the_fix_is_named,
        ),
        common::trial(
            "bad_input::without_uidmap_the_fix_is_named",
            real_root,
            without_uidmap_the_fix_is_named,
        ),
        common::trial(
            "a_rootless_run_judges_as_root_does",
            runs_cannot.clone(),
            move || a_rootless_run_judges_as_root_does(user1.expect("checked")),
        ),
        common::trial(
            "a_killed_rootless_run_leaves_nothing_after_gc",
            runs_cannot,
            move || a_killed_rootless_run_leaves_nothing_after_gc(user2.expect("checked")),
        ),
        common::trial(
            "a_shaped_path_without_tun_access_names_the_fix",
            runs_cannot_reference,
            move || a_shaped_path_without_tun_access_names_the_fix(user3.expect("checked")),
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
