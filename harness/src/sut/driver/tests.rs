//! Parsing and checking driver files.

use std::path::Path;

use super::*;
use crate::sut::SutKind;

const MINIMAL: &str = r#"name = "mymta"
description = "a test MTA"
check = ["/"]
start = ["/usr/sbin/mymta", "-c", "{{work_dir}}/etc/mymta.conf"]

[[config]]
path = "etc/mymta.conf"
template = """
me {{hostname}}
{{settings}}"""
"#;

/// [`MINIMAL`] with top-level `lines` added before its `[[config]]` table (line 5 on).
fn with(lines: &str) -> String {
    MINIMAL.replace("\n[[config]]", &format!("{lines}\n[[config]]"))
}

fn error_of(text: &str) -> String {
    DriverFile::parse(Path::new("d.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_minimal_driver_gets_its_defaults() {
    let driver = DriverFile::parse(Path::new("d.toml"), MINIMAL).unwrap();
    assert_eq!(driver.name, "mymta");
    assert_eq!(driver.description, "a test MTA");
    assert_eq!(driver.ready, Ready::Smtp("{{listen}}".into()));
    assert_eq!(driver.inject, Inject::Smtp);
    assert_eq!(driver.ready_timeout, Duration::from_secs(20));
    assert_eq!((driver.kick.clone(), driver.queue.clone()), (None, None));
    assert_eq!(driver.config[0].path, "etc/mymta.conf");
    assert!(driver.check_installed().is_ok());
}

#[test]
fn every_step_form_parses() {
    let text = with(
        "ready = 2526\nready_timeout = \"3s\"\n\
         inject = [\"/usr/sbin/sendmail\", \"-f\", \"{{from}}\", \"--\", \"{{to}}\"]\n\
         kick = [\"/bin/true\"]\nqueue = [\"/bin/cat\", \"q\"]\nstop = [\"/bin/true\"]\n\
         log = \"log/mta.log\"\n",
    );
    let driver = DriverFile::parse(Path::new("d.toml"), &text).unwrap();
    assert_eq!(driver.ready, Ready::Smtp("127.0.0.1:2526".into()));
    assert_eq!(driver.ready_timeout, Duration::from_secs(3));
    assert!(matches!(&driver.inject, Inject::Command(argv) if argv[4] == "{{to}}"));
    assert_eq!(driver.log.as_deref(), Some("log/mta.log"));
    let command = DriverFile::parse(
        Path::new("d.toml"),
        &with("ready = [\"/bin/check\", \"{{listen}}\"]\n"),
    )
    .unwrap();
    assert!(matches!(command.ready, Ready::Command(_)));
}

#[test]
fn a_missing_start_step_is_named_with_the_file() {
    let text = MINIMAL.replace("start = ", "# start = ");
    let err = error_of(&text);
    assert!(
        err.starts_with("d.toml: the driver has no `start` step; add the command"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_column_and_the_allowed_keys() {
    let err = error_of(&with("kik = [\"/bin/true\"]\n"));
    assert!(err.starts_with("d.toml:5:1: unknown field `kik`"), "{err}");
    assert!(err.contains("`kick`") && err.contains("`queue`"), "{err}");
    let err = error_of(&MINIMAL.replace("path = ", "mode = \"0644\"\npath = "));
    assert!(err.starts_with("d.toml:7:1: unknown field `mode`"), "{err}");
    assert!(err.contains("`path`, `template`, `filter`"), "{err}");
    // A top-level key after the first [[config]] belongs to that table: say so.
    let err = error_of(&format!("{MINIMAL}kick = [\"/bin/true\"]\n"));
    assert!(
        err.starts_with("d.toml:11:1: unknown field `kick`"),
        "{err}"
    );
    assert!(err.contains("before the first [[config]]"), "{err}");
}

#[test]
fn an_unknown_placeholder_is_named_with_its_place_and_the_allowed_ones() {
    let err = error_of(&MINIMAL.replace("me {{hostname}}", "me {{host}}"));
    assert!(
        err.starts_with("d.toml:8:12: config \"etc/mymta.conf\": unknown placeholder {{host}}; allowed: {{hostname}}"),
        "{err}"
    );
    let err = error_of(&with("kick = [\"/bin/kick\", \"{{to}}\"]\n"));
    assert!(
        err.starts_with("d.toml:5:8: `kick`: unknown placeholder {{to}}"),
        "{err}"
    );
}

#[test]
fn bad_values_are_explained() {
    for (replace, with, expected) in [
        (
            "name = \"mymta\"",
            "name = \"postfix\"",
            "is a built-in SUT's",
        ),
        ("name = \"mymta\"", "name = \"My MTA\"", "must be lowercase"),
        ("path = \"etc/", "path = \"../", "must be a relative path"),
        ("check = [\"/\"]", "check = [\"bin/x\"]", "must be absolute"),
    ] {
        let err = error_of(&MINIMAL.replace(replace, with));
        assert!(err.contains(expected), "{replace}: {err}");
    }
    for (line, expected) in [
        ("start = []", "`start` must be a non-empty command"),
        ("ready = \"localhost\"", "not an address"),
        ("ready = 70000", "port 70000 is not in 1..=65535"),
        ("ready_timeout = \"soon\"", "invalid duration \"soon\""),
        ("inject = \"lmtp\"", "unknown inject method \"lmtp\""),
        ("log = \"/var/log/mail.log\"", "must be a relative path"),
    ] {
        let text = MINIMAL.replace(
            "start = [\"/usr/sbin/mymta\", \"-c\", \"{{work_dir}}/etc/mymta.conf\"]",
            line,
        );
        let text = if line.starts_with("start") {
            text
        } else {
            text.replace("\n[[config]]", "start = [\"/bin/mta\"]\n[[config]]")
        };
        let err = error_of(&text);
        assert!(err.contains(expected), "{line}: {err}");
    }
}

#[test]
fn a_missing_check_path_names_the_install_hint() {
    let text = MINIMAL.replace(
        "check = [\"/\"]",
        "check = [\"/\", \"/nonexistent/mymta\"]\ninstall = \"apt-get install mymta\"",
    );
    let driver = DriverFile::parse(Path::new("d.toml"), &text).unwrap();
    assert_eq!(
        driver.check_installed().unwrap_err().to_string(),
        "mymta (d.toml) is not installed (no /nonexistent/mymta): apt-get install mymta"
    );
}

#[test]
fn sut_kinds_load_driver_files_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mymta.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let kind: SutKind = path.to_str().unwrap().parse().unwrap();
    assert_eq!(kind.name(), "mymta");
    assert_eq!(kind.settings_key(), "mymta");
    assert!(kind.check_installed().is_ok());
    let missing = dir.path().join("none.toml");
    let err = missing
        .to_str()
        .unwrap()
        .parse::<SutKind>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read driver file"), "{err}");
}

#[test]
fn the_shipped_drivers_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../drivers");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            DriverFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            found += 1;
        }
    }
    assert!(found >= 1, "no driver files in {}", dir.display());
}

#[test]
fn a_driver_runs_on_the_real_clock_unless_it_says_faketime() {
    let plain = DriverFile::parse(Path::new("d.toml"), MINIMAL).unwrap();
    assert!(!plain.can_accelerate());
    let real = DriverFile::parse(Path::new("d.toml"), &with("clock = \"real\"\n")).unwrap();
    assert!(!real.can_accelerate());
    let faketime = DriverFile::parse(Path::new("d.toml"), &with("clock = \"faketime\"\n")).unwrap();
    assert!(faketime.can_accelerate());
    assert!(SutKind::Driver(std::sync::Arc::new(faketime)).can_accelerate());
}

#[test]
fn an_unknown_driver_clock_is_refused_at_its_line() {
    let err = error_of(&with("clock = \"x100\"\n"));
    assert!(
        err.contains("d.toml:5:") && err.contains("\"x100\"") && err.contains("\"faketime\""),
        "{err}"
    );
}

#[test]
fn env_xfail_listen_family_filter_and_version_are_read_and_checked() {
    let text = with(
        "listen_family = \"ipv6\"\nversion = [\"/usr/sbin/mymta\", \"-V\"]\n\
         [env]\nLD_LIBRARY_PATH = \"/opt/mymta/lib\"\nMYMTA_HOME = \"{{work_dir}}\"\n\
         [xfail]\n\"tls/starttls-verified\" = { expects = [\"outcome\"], reason = \"no verify\" }\n",
    )
    .replace(
        "path = \"etc/mymta.conf\"",
        "path = \"etc/mymta.conf\"\nfilter = [\"/usr/bin/m4\", \"-P\"]",
    );
    let driver = DriverFile::parse(Path::new("d.toml"), &text).unwrap();
    assert_eq!(driver.listen_family, Some(crate::family::Family::Ipv6));
    assert_eq!(
        driver.env,
        [
            ("LD_LIBRARY_PATH".to_string(), "/opt/mymta/lib".to_string()),
            ("MYMTA_HOME".to_string(), "{{work_dir}}".to_string())
        ]
    );
    assert_eq!(
        driver.config[0].filter.as_deref(),
        Some(&["/usr/bin/m4".to_string(), "-P".to_string()][..])
    );
    assert_eq!(
        driver.version_command(),
        Some(&["/usr/sbin/mymta".to_string(), "-V".to_string()][..])
    );
    let xfail = driver.xfail("tls/starttls-verified").unwrap();
    assert_eq!(xfail.reason, "no verify");
    assert!(driver.xfail("baseline/dual-stack").is_none());

    let err = error_of(&with("[env]\n\"BAD-NAME\" = \"x\"\n"));
    assert!(err.contains("not a variable name"), "{err}");
    let err = error_of(&with("[env]\nX = \"{{nope}}\"\n"));
    assert!(
        err.contains("[env] X: unknown placeholder {{nope}}"),
        "{err}"
    );
    let err = error_of(&with(
        "[xfail]\nbaseline = { expects = [\"outcome\"], reason = \"r\" }\n",
    ));
    assert!(err.contains("not a scenario name"), "{err}");
    let err = error_of(&with("listen_family = \"both\"\n"));
    assert!(
        err.contains("`listen_family`: unknown value \"both\""),
        "{err}"
    );
    let err = error_of(&with("version = [\"/bin/mta\", \"{{work_dir}}\"]\n"));
    assert!(err.contains("takes no placeholders"), "{err}");
}

#[test]
fn a_driver_xfail_joins_the_scenario_expectations_unless_the_scenario_has_its_own() {
    let text =
        with("[xfail]\n\"smtp/x\" = { expects = [\"outcome\"], reason = \"from the driver\" }\n");
    let sut = SutKind::Driver(std::sync::Arc::new(
        DriverFile::parse(Path::new("d.toml"), &text).unwrap(),
    ));
    let plain = crate::scenario::ScenarioBuilder::new("smtp/x", "x")
        .mx("mx1", "example.test", 10)
        .message("alice@sender.test", &["bob@example.test"])
        .outcome(crate::scenario::Outcome::Delivered)
        .build()
        .unwrap();
    let merged = sut.expectations("smtp/x", &plain.expect);
    assert_eq!(merged.xfail["mymta"].get_ref().reason, "from the driver");
    assert!(sut.expectations("smtp/y", &plain.expect).xfail.is_empty());
}
