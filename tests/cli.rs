//! The `mxlab` binary on bad input: one clear line naming the problem and the fix, exit
//! status 2, nothing left behind.

use std::path::Path;
use std::process::{Command, Output};

fn mxlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mxlab"))
        .args(args)
        .output()
        .expect("the mxlab binary runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_scenario(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const VALID: &str = r#"
description = "d"
[[mx]]
name = "mx1"
domain = "example.test"
[[message]]
to = ["bob@example.test"]
[expect]
outcome = "delivered"
"#;

#[test]
fn an_unknown_key_names_its_place_shows_its_line_and_exits_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(dir.path(), "bad.toml", &VALID.replace("outcome", "outcom"));
    let output = mxlab(&["run", &path]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!("error: {path}:9:1: unknown field `outcom`")),
        "{stderr}"
    );
    assert!(lines[0].contains("expected one of"), "{stderr}");
    // The excerpt: the line itself, with the key underlined, and nothing else.
    assert_eq!(
        &lines[1..],
        ["  |", "9 | outcom = \"delivered\"", "  | ^^^^^^"],
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_named_with_exit_status_2() {
    let output = mxlab(&["run", "/nonexistent/scenario.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: /nonexistent/scenario.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_sut_lists_the_known_ones() {
    let output = mxlab(&["run", "--sut", "sendmail"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("unknown system under test \"sendmail\"; known: postfix"),
        "{stderr}"
    );
}

#[test]
fn without_privileges_the_fix_is_named() {
    if !nix::unistd::geteuid().is_root() {
        // Already unprivileged: run directly.
        let dir = tempfile::tempdir().unwrap();
        let path = write_scenario(dir.path(), "ok.toml", VALID);
        // Without newuidmap in PATH rootless mode is impossible too.
        let empty = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_mxlab"))
            .args(["run", &path])
            .env("PATH", empty.path())
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("or run mxlab as root"), "{stderr}");
        assert!(stderr.contains("apt-get install uidmap"), "{stderr}");
        return;
    }
    // As root: drop to nobody with no capabilities, the way an ordinary user would run it.
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let path = write_scenario(dir.path(), "ok.toml", VALID);
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_mxlab"))
        .args(["run", &path])
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // nobody has no subordinate ids (nor, where uidmap is missing, newuidmap): rootless mode
    // names what is missing and its fix.
    assert!(stderr.contains("or run mxlab as root"), "{stderr}");
    assert!(
        stderr.contains("subordinate uids in /etc/subuid")
            || stderr.contains("apt-get install uidmap"),
        "{stderr}"
    );
}

#[test]
fn a_clock_rate_out_of_range_or_malformed_names_the_allowed_forms() {
    for (rate, says) in [
        ("x0", "a clock rate below x1 would slow the world down"),
        ("x5000", "x1000"),
        ("fast", "write \"real\" or \"xN\""),
    ] {
        let output = mxlab(&["run", "--clock", rate]);
        assert_eq!(output.status.code(), Some(2), "--clock {rate}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains(says), "--clock {rate}: {stderr}");
    }
}

#[test]
fn an_accelerated_clock_for_a_driver_that_cannot_take_it_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "ok.toml", VALID);
    let driver = write_scenario(
        dir.path(),
        "tiny.toml",
        "name = \"tiny\"\ncheck = [\"/bin/sh\"]\nstart = [\"/bin/false\"]\n",
    );
    let output = mxlab(&["run", &scenario, "--sut", &driver, "--clock", "x100"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("tiny cannot run on an accelerated clock (x100 was asked for)")
            && stderr.contains("--clock real"),
        "{stderr}"
    );
}

#[test]
fn chaos_needs_its_suts_and_repeat_needs_a_count_of_runs() {
    let output = mxlab(&["chaos", "--seed", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("--sut"),
        "{}",
        stderr_of(&output)
    );
    let output = mxlab(&["chaos", "--sut", "reference:never-ipv5"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("never-ipv4"),
        "{}",
        stderr_of(&output)
    );
    let output = mxlab(&["run", "--repeat", "0", "scenarios"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("--repeat"),
        "{}",
        stderr_of(&output)
    );
}
