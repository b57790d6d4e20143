//! Postfix's private configuration: the work directory layout, `main.cf` and `master.cf`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SUT;
use crate::family::Family;
use crate::sut::{faketime, SutError, SutRoute, Timeouts, Timing};

/// Where one instance keeps its files, all under the work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `config_directory` (`-c`): only `main.cf` and `master.cf`. Kept apart from the spool so
    /// `postfix-script`'s ownership checks of the config tree stay quiet.
    pub conf: PathBuf,
    /// `queue_directory`, root-owned; Postfix creates its subdirectories at start.
    pub spool: PathBuf,
    /// `data_directory`, owned by the `postfix` user.
    pub data: PathBuf,
    /// The directory of the log files (also `maillog_file_prefixes`).
    pub log_dir: PathBuf,
    /// `maillog_file`, written by the `postlog` service.
    pub maillog: PathBuf,
    /// Standard output and error of `postfix start-fg`.
    pub stderr: PathBuf,
}

impl Layout {
    /// The layout under `work_dir`.
    pub fn new(work_dir: &Path) -> Self {
        let log_dir = work_dir.join("log");
        Self {
            conf: work_dir.join("conf"),
            spool: work_dir.join("spool"),
            data: work_dir.join("data"),
            maillog: log_dir.join("maillog"),
            stderr: log_dir.join("postfix.out"),
            log_dir,
        }
    }
}

/// Who owns a spool directory (see Postfix's `postfix-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpoolOwner {
    /// root:root.
    Root,
    /// `mail_owner` (postfix), group root.
    MailOwner,
    /// `mail_owner`, group `setgid_group` (postdrop).
    MailOwnerSetgidGroup,
}

/// The queue directory's subdirectories with owner and mode, as in Postfix 3.7's
/// `/etc/postfix/postfix-files`.
pub const SPOOL_DIRS: &[(&str, SpoolOwner, u32)] = &[
    ("active", SpoolOwner::MailOwner, 0o700),
    ("bounce", SpoolOwner::MailOwner, 0o700),
    ("corrupt", SpoolOwner::MailOwner, 0o700),
    ("defer", SpoolOwner::MailOwner, 0o700),
    ("deferred", SpoolOwner::MailOwner, 0o700),
    ("flush", SpoolOwner::MailOwner, 0o700),
    ("hold", SpoolOwner::MailOwner, 0o700),
    ("incoming", SpoolOwner::MailOwner, 0o700),
    ("private", SpoolOwner::MailOwner, 0o700),
    ("maildrop", SpoolOwner::MailOwnerSetgidGroup, 0o730),
    ("public", SpoolOwner::MailOwnerSetgidGroup, 0o710),
    ("pid", SpoolOwner::Root, 0o755),
    ("saved", SpoolOwner::MailOwner, 0o700),
    ("trace", SpoolOwner::MailOwner, 0o700),
];

/// Postfix's stock `import_environment` (Postfix 3.7's `postconf -d`); the world clock adds
/// libfaketime's variables to it.
const STOCK_IMPORT_ENVIRONMENT: &str =
    "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME";

/// The timers mxlab retunes with [`Timeouts::Fast`]; with [`Timeouts::Stock`] Postfix keeps
/// its shipped values (300 s queue runs and minimal backoff, 4000 s maximal backoff, 30 s
/// connect and 300 s HELO timeouts).
const FAST_TIMERS: [(&str, &str); 5] = [
    ("queue_run_delay", "1s"),
    ("minimal_backoff_time", "2s"),
    ("maximal_backoff_time", "4s"),
    ("smtp_connect_timeout", "5s"),
    ("smtp_helo_timeout", "10s"),
];

/// `main.cf` as (parameter, value) pairs in file order: the driver's defaults with the
/// scenario's `settings` applied last (an override keeps the default's place, new parameters
/// follow in name order).
pub fn main_cf_entries(
    layout: &Layout,
    hostname: &str,
    settings: &BTreeMap<String, String>,
    timing: Timing,
) -> Result<Vec<(String, String)>, SutError> {
    if hostname.is_empty() || hostname.contains(|c: char| c.is_whitespace() || c == ',') {
        return Err(SutError::bad_setting(
            SUT,
            "myhostname",
            format!("{hostname:?} is not a host name"),
        ));
    }
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| entries.push((key.to_string(), value));
    set("compatibility_level", "3.6".into());
    set(
        "queue_directory",
        path_value("queue_directory", &layout.spool)?,
    );
    set(
        "data_directory",
        path_value("data_directory", &layout.data)?,
    );
    set("maillog_file", path_value("maillog_file", &layout.maillog)?);
    set(
        "maillog_file_prefixes",
        path_value("maillog_file_prefixes", &layout.log_dir)?,
    );
    set("myhostname", hostname.to_string());
    match derived_domain(hostname) {
        Some(domain) => {
            set("mydomain", domain.to_string());
            set("myorigin", "$mydomain".into());
        }
        None => set("myorigin", "$myhostname".into()),
    }
    set("mydestination", "$myhostname, localhost".into());
    // `all` also lets the kernel pick the client source address; listening is restricted in
    // master.cf instead.
    set("inet_interfaces", "all".into());
    set("inet_protocols", "all".into());
    set("mynetworks", "127.0.0.0/8 [::1]/128".into());
    set(
        "smtpd_relay_restrictions",
        "permit_mynetworks, reject".into(),
    );
    set("alias_maps", String::new());
    set("alias_database", String::new());
    if timing.timeouts == Timeouts::Fast {
        for (key, value) in FAST_TIMERS {
            set(key, value.into());
        }
        set("delay_warning_time", "0".into());
    }
    if timing.clock.is_accelerated() {
        // Every Postfix program cleans its environment down to this list: without it the
        // daemons that master starts would run on the real clock.
        set(
            "import_environment",
            faketime::VARIABLES
                .iter()
                .filter(|name| {
                    !STOCK_IMPORT_ENVIRONMENT
                        .split(' ')
                        .any(|known| known == **name)
                })
                .fold(STOCK_IMPORT_ENVIRONMENT.to_string(), |list, name| {
                    format!("{list} {name}")
                }),
        );
    }
    set("smtp_tls_security_level", "none".into());
    for (key, value) in settings {
        check_setting(key, value)?;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => entries.push((key.clone(), value.clone())),
        }
    }
    Ok(entries)
}

/// `main.cf` parameters for the scenario's `[route]`: `relayhost`, a `default_transport`
/// restricted to one family (see [`family_transport`]) and `smtp_bind_address`(`6`). The
/// driver applies them before the scenario's own settings.
pub fn route_settings(route: &SutRoute) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    if let Some(relay) = &route.relay {
        settings.insert("relayhost".to_string(), format!("[{relay}]"));
    }
    if let Some(family) = route.only {
        settings.insert(
            "default_transport".to_string(),
            family_transport_name(family),
        );
    }
    for addr in &route.bind {
        let key = match Family::of(*addr) {
            Family::Ipv4 => "smtp_bind_address",
            Family::Ipv6 => "smtp_bind_address6",
        };
        settings.insert(key.to_string(), addr.to_string());
    }
    settings
}

/// The name of the transport that delivers over `family` only, e.g. `smtp-ipv4`.
fn family_transport_name(family: Family) -> String {
    format!("smtp-{family}")
}

/// The `master.cf` entry of the transport that delivers over `family` only: Postfix's SMTP
/// client with `-o inet_protocols=...`, the per-transport override of field bug 12.
pub fn family_transport(family: Family) -> String {
    let name = family_transport_name(family);
    let mut text = service_line(&[&name, "unix", "-", "-", "n", "-", "-", "smtp"]);
    text.push_str(&format!("  -o inet_protocols={family}\n"));
    text
}

/// Renders `main.cf` from [`main_cf_entries`].
pub fn main_cf(
    layout: &Layout,
    hostname: &str,
    settings: &BTreeMap<String, String>,
    timing: Timing,
) -> Result<String, SutError> {
    let mut text = String::from("# Written by mxlab for one throwaway run.\n");
    for (key, value) in main_cf_entries(layout, hostname, settings, timing)? {
        if value.is_empty() {
            text.push_str(&format!("{key} =\n"));
        } else {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    Ok(text)
}

/// `sut.sender.test` -> `sender.test`; `None` for a single-label name.
fn derived_domain(hostname: &str) -> Option<&str> {
    hostname
        .split_once('.')
        .map(|(_, domain)| domain.trim_end_matches('.'))
        .filter(|domain| !domain.is_empty())
}

fn check_setting(key: &str, value: &str) -> Result<(), SutError> {
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(SutError::bad_setting(
            SUT,
            key,
            "a main.cf parameter name has only letters, digits and '_'",
        ));
    }
    if value.contains(['\n', '\r']) {
        return Err(SutError::bad_setting(
            SUT,
            key,
            "the value must be one line",
        ));
    }
    Ok(())
}

fn path_value(key: &str, path: &Path) -> Result<String, SutError> {
    let text = path.to_str().ok_or_else(|| {
        SutError::bad_setting(SUT, key, format!("{} is not UTF-8", path.display()))
    })?;
    if text.contains(|c: char| c.is_whitespace() || c == ',') {
        return Err(SutError::bad_setting(
            SUT,
            key,
            format!("the work directory path {text:?} must not contain white space or commas"),
        ));
    }
    Ok(text.to_string())
}

/// The only family Postfix listens on, from its `inet_protocols` setting (`ipv4` or `ipv6`
/// alone); `None` when it uses both (the default, `all`).
pub fn listen_family(settings: &BTreeMap<String, String>) -> Option<Family> {
    let protocols: Vec<String> = settings
        .get("inet_protocols")?
        .split([',', ' '])
        .filter(|p| !p.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    match protocols.as_slice() {
        [only] if only == "ipv6" => Some(Family::Ipv6),
        [only] if only == "ipv4" => Some(Family::Ipv4),
        _ => None,
    }
}

/// Rewrites a stock `master.cf`: every service runs unchrooted (as `postconf -F
/// '*/*/chroot = n'` would do; a chrooted `smtp` would need a resolv.conf inside the spool),
/// every `inet` listener is replaced by one `smtpd` on `listen` only, and a `postlog` service
/// (needed by `maillog_file`) is added if the stock file lacks it. Comments and continuation
/// lines are kept.
pub fn master_cf(stock: &str, listen: &str) -> String {
    let mut out =
        String::from("# Written by mxlab from the stock master.cf for one throwaway run.\n");
    let mut skipping = false;
    let mut has_postlog = false;
    for line in stock.lines() {
        let continuation = line.starts_with([' ', '\t']) && !line.trim().is_empty();
        if continuation {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        skipping = false;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            // Not a service entry Postfix would accept either; keep it as it is.
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if fields[1] == "inet" {
            skipping = true;
            continue;
        }
        if fields[1] == "unix-dgram" && fields[7] == "postlogd" {
            has_postlog = true;
        }
        fields[4] = "n";
        out.push_str(&service_line(&fields));
    }
    if !has_postlog {
        out.push_str(&service_line(&[
            "postlog",
            "unix-dgram",
            "n",
            "-",
            "n",
            "-",
            "1",
            "postlogd",
        ]));
    }
    out.push_str(&service_line(&[
        listen, "inet", "n", "-", "n", "-", "-", "smtpd",
    ]));
    out
}

fn service_line(fields: &[&str]) -> String {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i + 1 == fields.len() {
            line.push_str(field);
        } else {
            let width = if i == 0 { 10 } else { 7 };
            line.push_str(&format!("{field:<width$} "));
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sut::LISTEN_ADDRESS;

    const STOCK: &str = "\
# comment
smtp      inet  n       -       y       -       -       smtpd
#submission inet n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submission
pickup    unix  n       -       y       60      1       pickup
qmgr      unix  n       -       n       300     1       qmgr
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
smtps     inet  n       -       y       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
postlog   unix-dgram n  -       n       -       1       postlogd
";

    fn fields_of(text: &str, service: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| l.split_whitespace().next() == Some(service))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn an_ipv6_only_postfix_listens_on_ipv6() {
        let settings = |value: &str| BTreeMap::from([("inet_protocols".into(), value.into())]);
        assert_eq!(listen_family(&settings("ipv6")), Some(Family::Ipv6));
        assert_eq!(listen_family(&settings(" IPv4 ")), Some(Family::Ipv4));
        assert_eq!(listen_family(&settings("ipv4, ipv6")), None);
        assert_eq!(listen_family(&settings("all")), None);
        assert_eq!(listen_family(&BTreeMap::new()), None);
    }

    #[test]
    fn master_cf_turns_chroot_off_and_replaces_listeners() {
        let out = master_cf(STOCK, LISTEN_ADDRESS);
        for line in out.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                assert_eq!(fields[4], "n", "chroot still on: {line}");
                assert_ne!(fields[0], "smtp", "stock smtp listener kept: {line}");
                assert_ne!(fields[0], "smtps", "stock smtps listener kept: {line}");
            }
        }
        assert!(
            !out.contains("wrappermode"),
            "the dropped entry's options stay out:\n{out}"
        );
        assert!(out.contains("        -o syslog_name=postfix/$service_name\n"));
        assert!(out.contains("#submission inet"));
        let listener = fields_of(&out, LISTEN_ADDRESS);
        assert_eq!(
            listener,
            [["127.0.0.1:2525", "inet", "n", "-", "n", "-", "-", "smtpd"]]
        );
        assert_eq!(fields_of(&out, "postlog").len(), 1);
        assert_eq!(fields_of(&out, "relay")[0][4], "n");
    }

    #[test_with::file(/etc/postfix/postfix-files)]
    #[test]
    fn spool_dirs_match_the_installed_postfix_files() {
        let files = std::fs::read_to_string("/etc/postfix/postfix-files")
            .expect("Postfix is installed (/etc/postfix/postfix-files)");
        let mut expected = Vec::new();
        for line in files.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            let Some(name) = fields[0].strip_prefix("$queue_directory/") else {
                continue;
            };
            if fields.get(1) != Some(&"d") {
                continue;
            }
            let owner = match (fields[2], fields[3]) {
                ("root", "-") => SpoolOwner::Root,
                ("$mail_owner", "-") => SpoolOwner::MailOwner,
                ("$mail_owner", "$setgid_group") => SpoolOwner::MailOwnerSetgidGroup,
                other => panic!("unexpected owner {other:?} in {line}"),
            };
            let mode = u32::from_str_radix(fields[4], 8).unwrap();
            expected.push((name, owner, mode));
        }
        let mut ours = SPOOL_DIRS.to_vec();
        ours.sort();
        expected.sort();
        assert_eq!(ours, expected);
    }

    #[test]
    fn master_cf_adds_postlog_when_missing() {
        let out = master_cf("pickup unix n - y 60 1 pickup\n", LISTEN_ADDRESS);
        assert_eq!(
            fields_of(&out, "postlog"),
            [["postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"]]
        );
    }

    #[test_with::file(/etc/postfix/master.cf)]
    #[test]
    fn debian_master_cf() {
        let stock = std::fs::read_to_string("/etc/postfix/master.cf")
            .expect("Postfix is installed (/etc/postfix/master.cf)");
        let out = master_cf(&stock, LISTEN_ADDRESS);
        assert_eq!(
            fields_of(&out, "smtp").len(),
            1,
            "only the smtp unix client stays"
        );
        assert_eq!(fields_of(&out, "smtp")[0][1], "unix");
        assert_eq!(fields_of(&out, "postlog").len(), 1);
        assert_eq!(fields_of(&out, LISTEN_ADDRESS).len(), 1);
    }

    fn lookup<'a>(entries: &'a [(String, String)], key: &str) -> Option<&'a str> {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn stock_timers_stay_stock_and_the_clock_passes_the_environment_filter() {
        let layout = Layout::new(Path::new("/w"));
        let stock = Timing {
            clock: "x100".parse().unwrap(),
            timeouts: Timeouts::Stock,
        };
        let entries = main_cf_entries(&layout, "sut.sender.test", &BTreeMap::new(), stock).unwrap();
        for (key, _) in FAST_TIMERS {
            assert_eq!(
                lookup(&entries, key),
                None,
                "{key} must keep Postfix's default"
            );
        }
        let imported = lookup(&entries, "import_environment").unwrap();
        assert!(imported.starts_with(STOCK_IMPORT_ENVIRONMENT), "{imported}");
        for variable in faketime::VARIABLES {
            assert!(
                imported.split(' ').any(|v| v == variable),
                "{variable} in {imported}"
            );
        }
        let fast = main_cf_entries(
            &layout,
            "sut.sender.test",
            &BTreeMap::new(),
            Timing::FAST_REAL,
        )
        .unwrap();
        assert_eq!(lookup(&fast, "smtp_connect_timeout"), Some("5s"));
        assert_eq!(lookup(&fast, "import_environment"), None);
    }

    #[test]
    fn main_cf_defaults() {
        let layout = Layout::new(Path::new("/w"));
        let entries = main_cf_entries(
            &layout,
            "sut.sender.test",
            &BTreeMap::new(),
            Timing::FAST_REAL,
        )
        .unwrap();
        assert_eq!(lookup(&entries, "queue_directory"), Some("/w/spool"));
        assert_eq!(lookup(&entries, "data_directory"), Some("/w/data"));
        assert_eq!(lookup(&entries, "maillog_file"), Some("/w/log/maillog"));
        assert_eq!(lookup(&entries, "maillog_file_prefixes"), Some("/w/log"));
        assert_eq!(lookup(&entries, "myhostname"), Some("sut.sender.test"));
        assert_eq!(lookup(&entries, "mydomain"), Some("sender.test"));
        assert_eq!(lookup(&entries, "myorigin"), Some("$mydomain"));
        assert_eq!(lookup(&entries, "smtp_tls_security_level"), Some("none"));
        assert_eq!(lookup(&entries, "disable_dns_lookups"), None);
        let text = main_cf(
            &layout,
            "sut.sender.test",
            &BTreeMap::new(),
            Timing::FAST_REAL,
        )
        .unwrap();
        assert!(text.contains("\nalias_maps =\n"), "{text}");
        assert!(text.contains("\ncompatibility_level = 3.6\n"), "{text}");
    }

    #[test]
    fn settings_override_defaults_and_add_parameters() {
        let layout = Layout::new(Path::new("/w"));
        let settings = BTreeMap::from([
            ("smtp_tls_security_level".to_string(), "may".to_string()),
            ("smtp_address_preference".to_string(), "ipv4".to_string()),
            ("queue_run_delay".to_string(), "5s".to_string()),
        ]);
        let entries =
            main_cf_entries(&layout, "sut.sender.test", &settings, Timing::FAST_REAL).unwrap();
        assert_eq!(lookup(&entries, "smtp_tls_security_level"), Some("may"));
        assert_eq!(lookup(&entries, "queue_run_delay"), Some("5s"));
        assert_eq!(lookup(&entries, "smtp_address_preference"), Some("ipv4"));
        let count = |key: &str| entries.iter().filter(|(k, _)| k == key).count();
        assert_eq!(count("smtp_tls_security_level"), 1);
        assert_eq!(count("queue_run_delay"), 1);
        assert_eq!(entries.last().unwrap().0, "smtp_address_preference");
    }

    #[test]
    fn bad_settings_are_refused() {
        let layout = Layout::new(Path::new("/w"));
        for (key, value) in [("a b", "x"), ("", "x"), ("x", "one\ntwo"), ("x=y", "z")] {
            let settings = BTreeMap::from([(key.to_string(), value.to_string())]);
            let err = main_cf_entries(&layout, "sut.sender.test", &settings, Timing::FAST_REAL)
                .unwrap_err();
            assert!(matches!(err, SutError::BadSetting { .. }), "{err}");
            assert!(err.to_string().starts_with("Postfix: "), "{err}");
        }
        let spaced = Layout::new(Path::new("/w with space"));
        assert!(main_cf_entries(&spaced, "h.test", &BTreeMap::new(), Timing::FAST_REAL).is_err());
    }

    #[test]
    fn single_label_host_names_keep_the_default_domain() {
        let layout = Layout::new(Path::new("/w"));
        let entries = main_cf_entries(&layout, "sut", &BTreeMap::new(), Timing::FAST_REAL).unwrap();
        assert_eq!(lookup(&entries, "mydomain"), None);
        assert_eq!(lookup(&entries, "myorigin"), Some("$myhostname"));
    }

    #[test]
    fn route_becomes_relayhost_transport_and_bind_addresses() {
        let route = SutRoute {
            relay: Some("smarthost.isp.test".into()),
            only: Some(Family::Ipv4),
            bind: vec!["192.0.2.2".parse().unwrap(), "2001:db8::2".parse().unwrap()],
        };
        let settings = route_settings(&route);
        assert_eq!(settings["relayhost"], "[smarthost.isp.test]");
        assert_eq!(settings["default_transport"], "smtp-ipv4");
        assert_eq!(settings["smtp_bind_address"], "192.0.2.2");
        assert_eq!(settings["smtp_bind_address6"], "2001:db8::2");
        assert!(route_settings(&SutRoute::default()).is_empty());
        assert_eq!(
            family_transport(Family::Ipv4),
            "smtp-ipv4  unix    -       -       n       -       -       smtp\n  -o inet_protocols=ipv4\n"
        );
    }
}
