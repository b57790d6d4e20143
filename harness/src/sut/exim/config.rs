//! Exim's private configuration: the work directory layout and the generated `exim.conf`.
//!
//! Exim trusts `-C FILE` in the re-execs of its daemon (which run as `Debian-exim`) only for
//! paths listed in the compiled-in `/etc/exim4/trusted_configs`; otherwise they log "exim user
//! lost privilege for using -C option". Every run's configuration sits in its own work
//! directory, so the driver bind-mounts the whole work directory, inside the instance's private
//! mount namespace, over one fixed directory, [`INSTANCE_DIR`]; `.ci/install-deps.sh` lists
//! `INSTANCE_DIR/exim.conf` in `trusted_configs` once. Every path in the configuration is
//! therefore an `INSTANCE_DIR` path, valid only inside that mount namespace. As a bonus Exim's
//! unprivileged processes need no access to the work directory's ancestors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SUT;
use crate::clock::ClockRate;
use crate::family::Family;
use crate::sut::{faketime, SutError, SutRoute, Timeouts, Timing};

/// The unpacked Exim binary (from Debian's `exim4-daemon-light`).
pub const EXIM: &str = "/opt/mxlab/exim/usr/sbin/exim4";
/// The fixed directory the work directory is bind-mounted over inside the instance's mount
/// namespace (an empty, root-owned placeholder outside it).
pub const INSTANCE_DIR: &str = "/opt/mxlab/exim/instance";
/// The compiled-in list of trusted configuration files.
pub const TRUSTED_CONFIGS: &str = "/etc/exim4/trusted_configs";
/// The port of the injection listener (on 127.0.0.1).
pub const LISTEN_PORT: u16 = 2525;

/// Where one instance keeps its files. Fields are paths in the harness's view (under the work
/// directory); [`Layout::inside`] gives the same path as Exim sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The work directory (bind-mounted over [`INSTANCE_DIR`]).
    pub work_dir: PathBuf,
    /// The generated configuration (root-owned, mode 0644).
    pub config: PathBuf,
    /// `spool_directory`, owned by `Debian-exim`; Exim makes `input/`, `msglog/` and `db/`.
    pub spool: PathBuf,
    /// The log directory, owned by `Debian-exim`.
    pub log_dir: PathBuf,
    /// Exim's main log.
    pub mainlog: PathBuf,
    /// Exim's panic log.
    pub paniclog: PathBuf,
    /// Standard output and error of the daemon.
    pub stderr: PathBuf,
    /// A copy of [`EXIM`] without the setuid bit, used on an accelerated clock: the loader
    /// drops `LD_PRELOAD` when a process that gave up root execs a setuid binary (Exim's
    /// delivery re-execs do), so only a plain copy keeps its processes on the world clock.
    pub binary: PathBuf,
}

impl Layout {
    /// The layout under `work_dir`.
    pub fn new(work_dir: &Path) -> Self {
        let log_dir = work_dir.join("log");
        Self {
            work_dir: work_dir.to_path_buf(),
            config: work_dir.join("exim.conf"),
            spool: work_dir.join("spool"),
            mainlog: log_dir.join("mainlog"),
            paniclog: log_dir.join("paniclog"),
            stderr: work_dir.join("exim.out"),
            binary: work_dir.join("exim4"),
            log_dir,
        }
    }

    /// `path` (under the work directory) as Exim sees it, under [`INSTANCE_DIR`].
    pub fn inside(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.work_dir) {
            Ok(rest) => Path::new(INSTANCE_DIR).join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The configuration file as Exim sees it (the path given to `-C`, listed in
    /// [`TRUSTED_CONFIGS`]).
    pub fn config_inside(&self) -> PathBuf {
        self.inside(&self.config)
    }

    /// The binary to run: the plain copy on an accelerated clock, else the unpacked one.
    pub fn exim_inside(&self, clock: ClockRate) -> PathBuf {
        if clock.is_accelerated() {
            self.inside(&self.binary)
        } else {
            PathBuf::from(EXIM)
        }
    }
}

/// Debian's retry rule (`/etc/exim4/conf.d/retry/30_exim4-config`): every 15 minutes for two
/// hours, then growing intervals up to 16 hours, then every 6 hours up to 4 days.
const STOCK_RETRY: &str = "*  *  F,2h,15m; G,16h,1h,1.5; F,4d,6h";
/// The retuned retry rule: every 2 s for an hour.
const FAST_RETRY: &str = "*  *  F,1h,2s";
/// Debian's queue runner interval (`QUEUEINTERVAL` in /etc/default/exim4).
const STOCK_QUEUE_INTERVAL: &str = "30m";
/// The retuned queue runner interval.
const FAST_QUEUE_INTERVAL: &str = "1s";

/// The daemon's queue-runner option, `-q30m` as Debian ships it or `-q1s` retuned.
pub fn queue_runner_option(timeouts: Timeouts) -> String {
    match timeouts {
        Timeouts::Stock => format!("-q{STOCK_QUEUE_INTERVAL}"),
        Timeouts::Fast => format!("-q{FAST_QUEUE_INTERVAL}"),
    }
}

/// The timers Exim arms with whole-second `alarm()`, with Exim 4.96's defaults, by the key a
/// scenario overrides them with. The queue runner interval is one too.
const ALARM_TIMERS: [(&str, &str); 5] = [
    ("remote_smtp.connect_timeout", "5m"),
    ("remote_smtp.command_timeout", "5m"),
    ("remote_smtp.data_timeout", "5m"),
    ("remote_smtp.final_timeout", "10m"),
    ("smtp_receive_timeout", "5m"),
];

/// Refuses a configuration whose `alarm()` timers would round to zero at the clock's rate.
fn check_alarm_timers(
    entries: &[(Section, String, String)],
    timing: Timing,
) -> Result<(), SutError> {
    let mut timers: Vec<(String, String)> = vec![(
        "queue runner interval (-q)".to_string(),
        match timing.timeouts {
            Timeouts::Stock => STOCK_QUEUE_INTERVAL,
            Timeouts::Fast => FAST_QUEUE_INTERVAL,
        }
        .to_string(),
    )];
    for (key, default) in ALARM_TIMERS {
        let (section, option) = match key.split_once('.') {
            Some((_, option)) => (Section::Transport, option),
            None => (Section::Main, key),
        };
        let value = entries
            .iter()
            .find(|(s, k, _)| *s == section && k == option)
            .map_or(default, |(_, _, v)| v.as_str());
        timers.push((key.to_string(), value.to_string()));
    }
    for (key, value) in timers {
        let world = humantime::parse_duration(value.trim()).map_err(|e| {
            SutError::bad_setting(
                SUT,
                &key,
                format!("{value:?} is not a time mxlab can read ({e})"),
            )
        })?;
        faketime::check_alarm_timer(SUT, &key, world, timing.clock)?;
    }
    Ok(())
}

/// Where a scenario setting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Main,
    Router,
    Transport,
}

/// The name of the one router.
const ROUTER: &str = "dnslookup";
/// The name of the one transport.
const TRANSPORT: &str = "remote_smtp";

/// The generated configuration as (section, option, value) in file order: the driver's
/// defaults with the scenario's settings applied last. A plain key is a main-section option;
/// `dnslookup.OPTION` and `remote_smtp.OPTION` set an option of the router or the transport.
/// An override keeps the default's place; new options follow in name order.
fn entries(
    layout: &Layout,
    hostname: &str,
    settings: &BTreeMap<String, String>,
    timing: Timing,
) -> Result<Vec<(Section, String, String)>, SutError> {
    if hostname.is_empty()
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(SutError::bad_setting(
            SUT,
            "primary_hostname",
            format!("{hostname:?} is not a host name"),
        ));
    }
    let mut entries: Vec<(Section, String, String)> = Vec::new();
    let mut main = |key: &str, value: &str| {
        entries.push((Section::Main, key.to_string(), value.to_string()));
    };
    let binary = layout.exim_inside(timing.clock);
    main(
        "exim_path",
        binary.to_str().ok_or_else(|| {
            SutError::bad_setting(
                SUT,
                "exim_path",
                format!("{} is not UTF-8", binary.display()),
            )
        })?,
    );
    main("spool_directory", &path_value(layout, &layout.spool)?);
    main(
        "log_file_path",
        &format!("{}/%slog", path_value(layout, &layout.log_dir)?),
    );
    main(
        "pid_file_path",
        &format!("{}/exim.pid", path_value(layout, &layout.log_dir)?),
    );
    main("primary_hostname", hostname);
    main("daemon_smtp_ports", &LISTEN_PORT.to_string());
    main("local_interfaces", "<; 127.0.0.1");
    // Exim clears its environment down to this list at start and in every re-exec.
    let kept = if timing.clock.is_accelerated() {
        faketime::VARIABLES.join(" : ")
    } else {
        String::new()
    };
    main("keep_environment", &kept);
    main("host_lookup", "");
    main("rfc1413_hosts", "");
    main("acl_smtp_rcpt", "acl_check_rcpt");
    main("tls_advertise_hosts", "");
    if timing.timeouts == Timeouts::Fast {
        main("delay_warning", "0s");
    }
    main(
        "log_selector",
        "+smtp_connection +outgoing_interface +outgoing_port +deliver_time +queue_time \
         +received_recipients +millisec -retry_defer",
    );
    for (section, option, value) in [
        (Section::Router, "driver", ROUTER),
        (Section::Router, "transport", TRANSPORT),
        (
            Section::Router,
            "ignore_target_hosts",
            &format!("<; {IGNORED_TARGETS}"),
        ),
        (Section::Router, "no_more", ""),
        (Section::Transport, "driver", "smtp"),
    ] {
        entries.push((section, option.to_string(), value.to_string()));
    }
    if timing.timeouts == Timeouts::Fast {
        for (option, value) in [
            ("connect_timeout", "5s"),
            ("command_timeout", "10s"),
            ("data_timeout", "10s"),
            ("final_timeout", "10s"),
            // TCP Fast Open is on by default and turns a black hole into the kernel's
            // SYN-retry time (135 s with stock settings) instead of connect_timeout.
            ("hosts_try_fastopen", ":"),
        ] {
            entries.push((Section::Transport, option.to_string(), value.to_string()));
        }
    }
    for (key, value) in settings {
        let (section, option) = match key.split_once('.') {
            None => (Section::Main, key.as_str()),
            Some((ROUTER, option)) => (Section::Router, option),
            Some((TRANSPORT, option)) => (Section::Transport, option),
            Some((prefix, _)) => {
                return Err(SutError::bad_setting(
                    SUT,
                    key,
                    format!(
                        "{prefix:?} is neither the router {ROUTER:?} nor the transport \
                         {TRANSPORT:?}; a plain key is a main-section option"
                    ),
                ))
            }
        };
        check_setting(key, option, value)?;
        match entries
            .iter_mut()
            .find(|(s, k, _)| *s == section && k == option)
        {
            Some(entry) => entry.2 = value.clone(),
            None => entries.push((section, option.to_string(), value.clone())),
        }
    }
    check_alarm_timers(&entries, timing)?;
    Ok(entries)
}

/// Settings (in the scenario's `[sut.exim]` key syntax) for the scenario's `[route]`: a relay
/// turns the router into `manualroute` with `route_list = * HOST`; a family restriction
/// ignores every target address of the other family (`ignore_target_hosts`); bind addresses
/// become the transport's `interface` list (Exim binds only to the address of the
/// connection's family). The driver applies them before the scenario's own settings.
pub fn route_settings(route: &SutRoute) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    let mut set = |key: &str, value: String| settings.insert(key.to_string(), value);
    if let Some(relay) = &route.relay {
        set(&format!("{ROUTER}.driver"), "manualroute".into());
        set(&format!("{ROUTER}.route_list"), format!("* {relay}"));
    }
    if let Some(family) = route.only {
        let other_family = match family {
            Family::Ipv4 => "::/0",
            Family::Ipv6 => "0.0.0.0/0",
        };
        set(
            &format!("{ROUTER}.ignore_target_hosts"),
            format!("<; {IGNORED_TARGETS} ; {other_family}"),
        );
    }
    if !route.bind.is_empty() {
        let addresses: Vec<String> = route.bind.iter().map(ToString::to_string).collect();
        set(
            &format!("{TRANSPORT}.interface"),
            format!("<; {}", addresses.join(" ; ")),
        );
    }
    settings
}

/// Target addresses the router always ignores (`;`-separated).
const IGNORED_TARGETS: &str = "0.0.0.0 ; 127.0.0.0/8";

/// Renders the whole configuration.
pub fn exim_conf(
    layout: &Layout,
    hostname: &str,
    settings: &BTreeMap<String, String>,
    timing: Timing,
) -> Result<String, SutError> {
    let entries = entries(layout, hostname, settings, timing)?;
    let option = |text: &mut String, indent: &str, key: &str, value: &str| {
        if value.is_empty() && (key.starts_with("no_") || key == "no_more") {
            text.push_str(&format!("{indent}{key}\n"));
        } else if value.is_empty() {
            text.push_str(&format!("{indent}{key} =\n"));
        } else {
            text.push_str(&format!("{indent}{key} = {value}\n"));
        }
    };
    let mut text = String::from("# Written by mxlab for one throwaway run.\n\n");
    text.push_str("hostlist relay_from_hosts = <; 127.0.0.1\n");
    for (_, key, value) in entries.iter().filter(|(s, ..)| *s == Section::Main) {
        option(&mut text, "", key, value);
    }
    text.push_str(
        "\nbegin acl\n\nacl_check_rcpt:\n  accept hosts = +relay_from_hosts\n  \
         deny message = relaying is allowed from 127.0.0.1 only\n",
    );
    text.push_str(&format!("\nbegin routers\n\n{ROUTER}:\n"));
    for (_, key, value) in entries.iter().filter(|(s, ..)| *s == Section::Router) {
        option(&mut text, "  ", key, value);
    }
    text.push_str(&format!("\nbegin transports\n\n{TRANSPORT}:\n"));
    for (_, key, value) in entries.iter().filter(|(s, ..)| *s == Section::Transport) {
        option(&mut text, "  ", key, value);
    }
    let retry = match timing.timeouts {
        Timeouts::Stock => STOCK_RETRY,
        Timeouts::Fast => FAST_RETRY,
    };
    text.push_str(&format!("\nbegin retry\n\n{retry}\n"));
    Ok(text)
}

fn check_setting(key: &str, option: &str, value: &str) -> Result<(), SutError> {
    if option.is_empty()
        || !option
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(SutError::bad_setting(
            SUT,
            key,
            "an Exim option name has only letters, digits and '_'",
        ));
    }
    if value.contains(['\n', '\r']) || value.trim_end().ends_with('\\') {
        return Err(SutError::bad_setting(
            SUT,
            key,
            "the value must be one line (and not end with a backslash)",
        ));
    }
    Ok(())
}

fn path_value(layout: &Layout, path: &Path) -> Result<String, SutError> {
    let inside = layout.inside(path);
    let text = inside.to_str().ok_or_else(|| {
        SutError::bad_setting(
            SUT,
            "spool_directory",
            format!("{} is not UTF-8", inside.display()),
        )
    })?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Path::new("/tmp/mxlab-1/exim"))
    }

    #[test]
    fn stock_exim_keeps_its_timers_and_runs_a_plain_copy_on_the_world_clock() {
        let stock = Timing {
            clock: "x100".parse().unwrap(),
            timeouts: Timeouts::Stock,
        };
        let text = exim_conf(&layout(), "sut.sender.test", &BTreeMap::new(), stock).unwrap();
        for retuned in [
            "connect_timeout",
            "command_timeout",
            "hosts_try_fastopen",
            "delay_warning",
        ] {
            assert!(
                !text.contains(retuned),
                "{retuned} must keep Exim's default: {text}"
            );
        }
        assert!(text.contains(&format!("\n{STOCK_RETRY}\n")), "{text}");
        assert!(
            text.contains("exim_path = /opt/mxlab/exim/instance/exim4\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "keep_environment = LD_PRELOAD : FAKETIME : NO_FAKE_STAT : FAKETIME_SHARED : TZ\n"
            ),
            "{text}"
        );
        assert_eq!(queue_runner_option(Timeouts::Stock), "-q30m");
    }

    #[test]
    fn an_alarm_timer_that_the_clock_would_cancel_is_refused() {
        let fast_clock = Timing {
            clock: "x100".parse().unwrap(),
            timeouts: Timeouts::Stock,
        };
        let settings =
            BTreeMap::from([("remote_smtp.connect_timeout".to_string(), "30s".to_string())]);
        let err = exim_conf(&layout(), "sut.sender.test", &settings, fast_clock)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("remote_smtp.connect_timeout") && err.contains("alarm(0)"),
            "{err}"
        );
        // The retuned profile's 1 s queue runs cannot be accelerated at all.
        let retuned_fast_clock = Timing {
            clock: "x10".parse().unwrap(),
            timeouts: Timeouts::Fast,
        };
        let err = exim_conf(
            &layout(),
            "sut.sender.test",
            &BTreeMap::new(),
            retuned_fast_clock,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("queue runner interval"), "{err}");
    }

    #[test]
    fn paths_are_the_instance_paths() {
        let layout = layout();
        assert_eq!(
            layout.config_inside(),
            Path::new("/opt/mxlab/exim/instance/exim.conf")
        );
        let text = exim_conf(
            &layout,
            "sut.sender.test",
            &BTreeMap::new(),
            Timing::FAST_REAL,
        )
        .unwrap();
        assert!(text.contains("spool_directory = /opt/mxlab/exim/instance/spool\n"));
        assert!(text.contains("log_file_path = /opt/mxlab/exim/instance/log/%slog\n"));
        assert!(text.contains("primary_hostname = sut.sender.test\n"));
        assert!(text.contains("keep_environment =\n"));
        assert!(text.contains("  hosts_try_fastopen = :\n"));
        assert!(text.contains("  no_more\n"));
        assert!(text.contains("*  *  F,1h,2s\n"));
        assert!(!text.contains("/tmp/mxlab-1"), "{text}");
    }

    #[test]
    fn settings_override_in_place_and_reach_router_and_transport() {
        let settings = BTreeMap::from([
            ("remote_smtp.connect_timeout".to_string(), "1s".to_string()),
            ("dns_ipv4_lookup".to_string(), "*".to_string()),
            ("host_lookup".to_string(), "*".to_string()),
            ("dnslookup.widen_domains".to_string(), "test".to_string()),
        ]);
        let text = exim_conf(&layout(), "sut.sender.test", &settings, Timing::FAST_REAL).unwrap();
        assert!(
            text.contains("host_lookup = *\nrfc1413_hosts =\n"),
            "{text}"
        );
        assert!(text.contains("dns_ipv4_lookup = *\n\nbegin acl"), "{text}");
        assert!(text.contains("  connect_timeout = 1s\n"), "{text}");
        assert!(!text.contains("connect_timeout = 5s"), "{text}");
        assert!(
            text.contains("  no_more\n  widen_domains = test\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for (key, value) in [
            ("acl.x", "1"),
            ("bad key", "1"),
            ("remote_smtp.", "1"),
            ("x", "a\nb"),
            ("x", "a \\"),
        ] {
            let settings = BTreeMap::from([(key.to_string(), value.to_string())]);
            let err =
                exim_conf(&layout(), "sut.sender.test", &settings, Timing::FAST_REAL).unwrap_err();
            assert!(
                matches!(&err, SutError::BadSetting { key: k, .. } if k == key),
                "{err}"
            );
        }
        assert!(exim_conf(&layout(), "bad host", &BTreeMap::new(), Timing::FAST_REAL).is_err());
    }

    #[test]
    fn route_becomes_manualroute_ignored_targets_and_interface() {
        let route = SutRoute {
            relay: Some("smarthost.isp.test".into()),
            only: Some(Family::Ipv4),
            bind: vec!["192.0.2.2".parse().unwrap()],
        };
        let text = exim_conf(
            &layout(),
            "sut.sender.test",
            &route_settings(&route),
            Timing::FAST_REAL,
        )
        .unwrap();
        assert!(text.contains("  driver = manualroute\n"), "{text}");
        assert!(
            text.contains("  route_list = * smarthost.isp.test\n"),
            "{text}"
        );
        assert!(
            text.contains("  ignore_target_hosts = <; 0.0.0.0 ; 127.0.0.0/8 ; ::/0\n"),
            "{text}"
        );
        assert!(text.contains("  interface = <; 192.0.2.2\n"), "{text}");
        let v6_only = SutRoute {
            only: Some(Family::Ipv6),
            ..SutRoute::default()
        };
        assert_eq!(
            route_settings(&v6_only)["dnslookup.ignore_target_hosts"],
            "<; 0.0.0.0 ; 127.0.0.0/8 ; 0.0.0.0/0"
        );
        assert!(route_settings(&SutRoute::default()).is_empty());
    }
}
