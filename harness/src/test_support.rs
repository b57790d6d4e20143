//! What the unit tests share.
//!
//! A unit test that needs what a machine may lack (root, an installed MTA, a tool) carries
//! test-with's attributes (`#[test_with::root()]`, `#[test_with::file(..)]`,
//! `#[test_with::executable(..)]`): where it is compiled without them it is listed as ignored
//! with the reason, never as ok. Inside, [`require`] fails it with the reason should the binary
//! run where it was not built (compiled as root, run as a user). The integration tests under
//! `tests/` decide at run time and report such tests as ignored through libtest-mimic.

/// The smallest valid scenario: one MX, one message, delivery expected.
pub(crate) const MINIMAL_SCENARIO: &str = r#"
description = "nothing broken"

[[mx]]
name = "mx1"
domain = "example.test"

[[message]]
to = ["bob@example.test"]

[expect]
outcome = "delivered"
"#;

/// Fails the calling test with `reason`, when there is one: it cannot run here.
pub(crate) fn require(reason: Option<String>) {
    if let Some(reason) = reason {
        panic!("this test cannot run here: {reason}");
    }
}

/// Fails the calling test unless it runs as root; `what` says what it needs root for.
pub(crate) fn require_root(what: &str) {
    require(needs_root(what));
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
