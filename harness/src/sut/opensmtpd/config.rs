//! OpenSMTPD's private configuration: the work directory layout and `smtpd.conf`.
//!
//! OpenSMTPD's spool (`/var/spool/smtpd`) and control socket (`/run/smtpd.sock`) paths are
//! compiled in, so the driver bind-mounts private directories of the work directory over both
//! inside the instance's own mount namespace; one instance per mount namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SUT;
use crate::sut::{SutError, SutRoute, Timeouts};

/// The unpacked `smtpd` (from Debian's `opensmtpd`).
pub const SMTPD: &str = "/opt/mxlab/opensmtpd/usr/sbin/smtpd";
/// The unpacked `smtpctl`.
pub const SMTPCTL: &str = "/opt/mxlab/opensmtpd/usr/sbin/smtpctl";
/// The compiled-in spool directory (a placeholder outside the instance's mount namespace).
pub const SPOOL_TARGET: &str = "/var/spool/smtpd";
/// The directory holding the compiled-in control socket path (`/var/run` is `/run`).
pub const RUN_TARGET: &str = "/run";
/// The compiled-in chroot directory of OpenSMTPD's unprivileged processes.
pub const EMPTY_DIR: &str = "/var/lib/opensmtpd/empty";
/// The port of the injection listener (on 127.0.0.1).
pub const LISTEN_PORT: u16 = 2525;

/// Where one instance keeps its files, all under the work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The work directory.
    pub work_dir: PathBuf,
    /// The generated `smtpd.conf`.
    pub config: PathBuf,
    /// Bind-mounted over [`SPOOL_TARGET`] (root, mode 0711; smtpd makes the queue below).
    pub spool: PathBuf,
    /// Bind-mounted over [`RUN_TARGET`]: `smtpd.sock` and `smtpd.pid` land here.
    pub run: PathBuf,
    /// The log directory.
    pub log_dir: PathBuf,
    /// Standard error of `smtpd -d`: OpenSMTPD's whole log.
    pub log: PathBuf,
}

impl Layout {
    /// The layout under `work_dir`.
    pub fn new(work_dir: &Path) -> Self {
        let log_dir = work_dir.join("log");
        Self {
            work_dir: work_dir.to_path_buf(),
            config: work_dir.join("smtpd.conf"),
            spool: work_dir.join("spool"),
            run: work_dir.join("run"),
            log: log_dir.join("smtpd.log"),
            log_dir,
        }
    }
}

/// Renders `smtpd.conf`. The scenario's settings are whole `smtpd.conf` lines keyed by their
/// first words: a key equal to the first word(s) of a default line (`queue`, `bounce`,
/// `listen`, `action`, `match`) replaces that line, as `KEY VALUE`; any other key adds the
/// line `KEY VALUE` before the `action` (smtpd.conf wants options before rules).
///
/// With [`Timeouts::Fast`] the queue lifetime is one hour and delay warnings are off (every
/// forced retry counts, so warnings would come early); with [`Timeouts::Stock`] OpenSMTPD
/// keeps its shipped `queue ttl 4d` and `bounce warn-interval 4h`.
pub fn smtpd_conf(
    hostname: &str,
    settings: &BTreeMap<String, String>,
    timeouts: Timeouts,
) -> Result<String, SutError> {
    if hostname.is_empty()
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(SutError::bad_setting(
            SUT,
            "hostname",
            format!("{hostname:?} is not a host name"),
        ));
    }
    let mut lines: Vec<(String, String)> = Vec::new();
    if timeouts == Timeouts::Fast {
        lines.push(("queue".into(), "ttl 1h".into()));
        lines.push(("bounce".into(), "warn-interval 30d".into()));
    }
    lines.push((
        "listen".into(),
        format!("on 127.0.0.1 port {LISTEN_PORT} hostname {hostname}"),
    ));
    let rules: Vec<(String, String)> = vec![
        ("action".into(), format!("\"out\" relay helo {hostname}")),
        ("match".into(), "from local for any action \"out\"".into()),
    ];
    let mut rules = rules;
    for (key, value) in settings {
        if key.trim().is_empty() || key.contains(['\n', '\r', '#']) {
            return Err(SutError::bad_setting(
                SUT,
                key,
                "the key must be the first word(s) of a smtpd.conf line",
            ));
        }
        if value.contains(['\n', '\r']) {
            return Err(SutError::bad_setting(
                SUT,
                key,
                "the value must be one line",
            ));
        }
        if let Some(line) = lines
            .iter_mut()
            .chain(rules.iter_mut())
            .find(|(k, _)| k == key)
        {
            line.1 = value.clone();
        } else {
            lines.push((key.clone(), value.clone()));
        }
    }
    let mut text = String::from("# Written by mxlab for one throwaway run.\n");
    for (key, value) in lines.iter().chain(rules.iter()) {
        text.push_str(&format!("{key} {value}\n"));
    }
    Ok(text)
}

/// Settings (in the scenario's `[sut.opensmtpd]` line syntax) for the scenario's `[route]`: a
/// relay becomes `host smtp://HOST` in the `action` line, bind addresses a `src <mxlab_src>`
/// table. OpenSMTPD has no per-action address-family setting, so `route.only` is not
/// expressed (the driver notes that in the event log). The driver applies them before the
/// scenario's own settings.
pub fn route_settings(hostname: &str, route: &SutRoute) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    let mut action = String::from("\"out\" relay");
    if let Some(relay) = &route.relay {
        action.push_str(&format!(" host smtp://{relay}"));
    }
    if !route.bind.is_empty() {
        let addresses: Vec<String> = route.bind.iter().map(ToString::to_string).collect();
        settings.insert(
            format!("table {SOURCE_TABLE}"),
            format!("{{ {} }}", addresses.join(", ")),
        );
        action.push_str(&format!(" src <{SOURCE_TABLE}>"));
    }
    if route.relay.is_some() || !route.bind.is_empty() {
        action.push_str(&format!(" helo {hostname}"));
        settings.insert("action".to_string(), action);
    }
    settings
}

/// The table of source addresses for `[route] bind`.
const SOURCE_TABLE: &str = "mxlab_src";

/// The scenario setting that wrote the `smtpd.conf` line smtpd refused at start-up, as a
/// bad-setting error naming it: smtpd reports only the line (`smtpd.conf:3: syntax error`).
/// `None` when the log names no line, or the line is not one of `settings`.
pub fn refused_setting(
    log_tail: &str,
    conf: &str,
    settings: &BTreeMap<String, String>,
) -> Option<SutError> {
    let (number, message) = log_tail.lines().find_map(|line| {
        let (_, rest) = line.split_once("smtpd.conf:")?;
        let (number, message) = rest.split_once(':')?;
        Some((number.parse::<usize>().ok()?, message.trim()))
    })?;
    let refused = conf.lines().nth(number.checked_sub(1)?)?;
    let (key, _) = settings
        .iter()
        .find(|(key, value)| refused == format!("{key} {value}"))?;
    Some(SutError::bad_setting(
        SUT,
        key,
        format!("OpenSMTPD refuses the line {refused:?} ({message}): it has no such option"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration() {
        assert_eq!(
            smtpd_conf("sut.sender.test", &BTreeMap::new(), Timeouts::Fast).unwrap(),
            "# Written by mxlab for one throwaway run.\n\
             queue ttl 1h\n\
             bounce warn-interval 30d\n\
             listen on 127.0.0.1 port 2525 hostname sut.sender.test\n\
             action \"out\" relay helo sut.sender.test\n\
             match from local for any action \"out\"\n"
        );
    }

    #[test]
    fn a_refused_line_names_the_setting_that_wrote_it() {
        let settings = BTreeMap::from([("smtp_skip_4xx_greeting".to_string(), "no".to_string())]);
        let conf = smtpd_conf("sut.sender.test", &settings, Timeouts::Stock).unwrap();
        let number = conf
            .lines()
            .position(|line| line == "smtp_skip_4xx_greeting no")
            .unwrap()
            + 1;
        let tail = format!("/tmp/x/opensmtpd/smtpd.conf:{number}: syntax error");
        let err = refused_setting(&tail, &conf, &settings)
            .unwrap()
            .to_string();
        assert!(
            err.contains("bad setting \"smtp_skip_4xx_greeting\"") && err.contains("syntax error"),
            "{err}"
        );
        let other = format!("/tmp/x/opensmtpd/smtpd.conf:{}: syntax error", number + 1);
        assert!(refused_setting(&other, &conf, &settings).is_none());
        assert!(refused_setting("warn: something else", &conf, &settings).is_none());
    }

    #[test]
    fn settings_replace_or_add_lines_before_the_rules() {
        let settings = BTreeMap::from([
            ("queue".to_string(), "ttl 2h".to_string()),
            ("smtp".to_string(), "max-message-size 10M".to_string()),
            (
                "action".to_string(),
                "\"out\" relay helo sut.sender.test srs".to_string(),
            ),
        ]);
        let text = smtpd_conf("sut.sender.test", &settings, Timeouts::Fast).unwrap();
        assert!(text.contains("queue ttl 2h\n"), "{text}");
        assert!(
            text.contains("hostname sut.sender.test\nsmtp max-message-size 10M\naction \"out\" relay helo sut.sender.test srs\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let settings = BTreeMap::from([("x".to_string(), "a\nb".to_string())]);
        assert!(matches!(
            smtpd_conf("sut.sender.test", &settings, Timeouts::Fast),
            Err(SutError::BadSetting { .. })
        ));
        assert!(smtpd_conf("bad host", &BTreeMap::new(), Timeouts::Fast).is_err());
    }

    #[test]
    fn route_becomes_relay_host_and_source_table() {
        let route = SutRoute {
            relay: Some("smarthost.isp.test".into()),
            only: None,
            bind: vec!["192.0.2.2".parse().unwrap()],
        };
        let text = smtpd_conf(
            "sut.sender.test",
            &route_settings("sut.sender.test", &route),
            Timeouts::Fast,
        )
        .unwrap();
        assert!(
            text.contains(
                "table mxlab_src { 192.0.2.2 }\n\
                 action \"out\" relay host smtp://smarthost.isp.test src <mxlab_src> helo sut.sender.test\n"
            ),
            "{text}"
        );
        assert!(route_settings("sut.sender.test", &SutRoute::default()).is_empty());
    }
}
