//! What the integration tests share: how a test that cannot run on this machine is reported.
//!
//! Such a test is listed as ignored, its reason printed once on stderr; with `MXLAB_REQUIRE_ALL=1`
//! (set by `.ci/run`) it fails with that reason instead, so CI cannot pass a test it never ran.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use libtest_mimic::{Failed, Trial};

/// Whether every test must run: `MXLAB_REQUIRE_ALL=1`.
fn require_all() -> bool {
    std::env::var("MXLAB_REQUIRE_ALL").is_ok_and(|value| value == "1")
}

/// Why rootless mode could not be entered, when not root.
static NOT_ROOTLESS: OnceLock<String> = OnceLock::new();

/// First call of every test binary's `main`, before any thread starts: as an ordinary user,
/// enters rootless mode (a user namespace with the user's subordinate ids mapped, see
/// `mxlab::rootless`), so the tests run as they do as root. Where that is impossible, the
/// tests that need root are ignored with the reason ([`needs_root`]).
pub fn enter() {
    if let Err(err) = mxlab::rootless::enter() {
        let _ = NOT_ROOTLESS.set(err.to_string());
    }
}

/// Why a test that needs root for `what` cannot run here, if it cannot.
pub fn needs_root(what: &str) -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| match NOT_ROOTLESS.get() {
        Some(why) => format!("needs root or rootless mode ({what}): {why}"),
        None => format!("needs root ({what})"),
    })
}

/// A test named `name` running `test`; when `cannot_run` gives a reason, the test is ignored
/// with it (or, under `MXLAB_REQUIRE_ALL=1`, fails with it).
pub fn trial<F>(name: impl Into<String>, cannot_run: Option<String>, test: F) -> Trial
where
    F: FnOnce() -> Result<(), Failed> + Send + 'static,
{
    let name = name.into();
    match cannot_run {
        None => Trial::test(name, test),
        Some(reason) if require_all() => Trial::test(name, move || {
            Err(format!("cannot run here, and MXLAB_REQUIRE_ALL=1: {reason}").into())
        }),
        Some(reason) => {
            // Once per reason, not once per test.
            static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
            if SAID.lock().expect("not poisoned").insert(reason.clone()) {
                eprintln!("ignoring tests that cannot run here: {reason}");
            }
            Trial::test(name, test).with_ignored_flag(true)
        }
    }
}

/// A multi-threaded tokio runtime for one test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A scenario whose message stays queued, so that a run of it can be signalled or killed in the
/// middle. Its watch time is long (2 h of world time, 72 s of wall time at the default x100):
/// with a short one the run could be over, deferral and all, before a test catches it mid-way.
#[allow(dead_code)] // used by the test files that kill runs, not by every test file
pub const STUCK_SCENARIO: &str = r#"
description = "every MX address answers 421, so the message stays queued"
[[mx]]
name = "mx1"
domain = "example.test"
[[fault]]
on = "mx1"
smtp = { stage = "greeting", reply = "421 4.3.2 go away" }
[[message]]
to = ["bob@example.test"]
[expect]
outcome = "deferred"
within = "2h"
"#;

/// One look for the work directory of the `mxlab` run with process id `pid` (its `owner` file
/// names the pid), once that run's Postfix has logged the MX's 421: the run is then mid-way,
/// with its labs, namespaces and processes all up.
#[allow(dead_code)] // used by the test files that kill runs, not by every test file
pub fn stuck_run_work_dir(pid: u32) -> Option<std::path::PathBuf> {
    let entry = std::fs::read_dir(std::env::temp_dir())
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("owner"))
                .is_ok_and(|owner| owner.split_whitespace().next() == Some(&pid.to_string()))
        })?;
    let log = std::fs::read_to_string(entry.path().join("postfix/log/maillog")).ok()?;
    log.contains("421 4.3.2 go away").then(|| entry.path())
}

/// The network namespaces a run recorded in its work directory, as `/proc/PID/ns/net` names
/// them (`net:[INODE]`).
#[allow(dead_code)] // used by the test files that kill runs, not by every test file
pub fn run_namespaces(work_dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(work_dir.join("namespaces"))
        .unwrap()
        .split_whitespace()
        .map(|inode| format!("net:[{inode}]"))
        .collect()
}
