//! What the unit tests share: a test that cannot run on this machine (not root, a tool
//! missing) says why on stderr and returns early; with `MXLAB_REQUIRE_ALL=1` (set by `.ci/run`)
//! it fails with that reason instead, so CI cannot pass a test it never ran.
//!
//! (libtest has no way to mark a test ignored at run time; the integration tests under
//! `tests/` report such tests as ignored through libtest-mimic.)

/// True if `test` cannot run because of `reason` (then it prints why); panics instead under
/// `MXLAB_REQUIRE_ALL=1`.
pub(crate) fn cannot_run(test: &str, reason: Option<String>) -> bool {
    let Some(reason) = reason else {
        return false;
    };
    if std::env::var("MXLAB_REQUIRE_ALL").is_ok_and(|value| value == "1") {
        panic!("{test} cannot run here, and MXLAB_REQUIRE_ALL=1: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
    true
}

/// `Some("needs root (WHAT)")` unless running as root.
pub(crate) fn needs_root(what: &str) -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| format!("needs root ({what})"))
}

/// The lines of the [`EventKind::SutLog`](crate::events::EventKind::SutLog) events recorded
/// in `log`, in order.
pub(crate) fn sut_log_lines(log: &crate::events::EventLog) -> Vec<String> {
    log.snapshot()
        .into_iter()
        .filter_map(|e| match e.kind {
            crate::events::EventKind::SutLog { line } => Some(line),
            _ => None,
        })
        .collect()
}
