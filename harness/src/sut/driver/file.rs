//! Reading and checking driver files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::template::{self, Scope};
use super::{ConfigFile, DriverClock, DriverError, DriverFile, Inject, Ready};
use crate::excerpt::Located;
use crate::family::Family;
use crate::scenario::Xfail;
use crate::sut::SutKind;

/// How long `ready` may take when the file does not say.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The top-level keys, for the hint when one is written after a `[[config]]` table.
const TOP_LEVEL: &[&str] = &[
    "name",
    "description",
    "check",
    "install",
    "start",
    "ready",
    "ready_timeout",
    "inject",
    "kick",
    "queue",
    "stop",
    "log",
    "clock",
    "listen_family",
    "version",
];

/// A driver file as written, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDriver {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    install: Option<String>,
    #[serde(default)]
    check: Vec<Spanned<String>>,
    #[serde(default)]
    config: Vec<RawConfig>,
    start: Option<Spanned<Vec<String>>>,
    ready: Option<Spanned<RawReady>>,
    ready_timeout: Option<Spanned<String>>,
    inject: Option<Spanned<RawInject>>,
    kick: Option<Spanned<Vec<String>>>,
    queue: Option<Spanned<Vec<String>>>,
    stop: Option<Spanned<Vec<String>>>,
    version: Option<Spanned<Vec<String>>>,
    log: Option<Spanned<String>>,
    clock: Option<Spanned<String>>,
    listen_family: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    xfail: BTreeMap<String, Spanned<Xfail>>,
}

/// One `[[config]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    path: Spanned<String>,
    template: Spanned<String>,
    filter: Option<Spanned<Vec<String>>>,
}

/// `ready` as written: a port, an address or a command.
enum RawReady {
    Port(u16),
    Address(String),
    Command(Vec<String>),
}

impl<'de> Deserialize<'de> for RawReady {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReadyVisitor;
        impl<'de> Visitor<'de> for ReadyVisitor {
            type Value = RawReady;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an SMTP port on 127.0.0.1 (2525), an SMTP address (\"127.0.0.1:2525\", \
                     \"{{listen}}\") or a command ([\"/path/to/tool\", \"arg\"])",
                )
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawReady, E> {
                u16::try_from(value)
                    .ok()
                    .filter(|port| *port > 0)
                    .map(RawReady::Port)
                    .ok_or_else(|| E::custom(format!("port {value} is not in 1..=65535")))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawReady, E> {
                Ok(RawReady::Address(value.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawReady, A::Error> {
                strings(seq).map(RawReady::Command)
            }
        }
        deserializer.deserialize_any(ReadyVisitor)
    }
}

/// `inject` as written: `"smtp"` or a command.
enum RawInject {
    Smtp,
    Command(Vec<String>),
}

impl<'de> Deserialize<'de> for RawInject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InjectVisitor;
        impl<'de> Visitor<'de> for InjectVisitor {
            type Value = RawInject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"smtp\" or a command that reads the message on standard input \
                     ([\"/usr/sbin/sendmail\", \"-f\", \"{{from}}\", \"--\", \"{{to}}\"])",
                )
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawInject, E> {
                match value {
                    "smtp" => Ok(RawInject::Smtp),
                    other => Err(E::custom(format!(
                        "unknown inject method {other:?}; expected {}",
                        Expecting(&self)
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawInject, A::Error> {
                strings(seq).map(RawInject::Command)
            }
        }
        deserializer.deserialize_any(InjectVisitor)
    }
}

/// Shows a visitor's `expecting` text.
struct Expecting<'v, V>(&'v V);

impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}

fn strings<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<String>, A::Error> {
    let mut out = Vec::new();
    while let Some(item) = seq.next_element::<String>()? {
        out.push(item);
    }
    Ok(out)
}

/// Parses and checks driver-file text; `path` names it in errors.
pub(super) fn parse(path: &Path, text: &str) -> Result<DriverFile, DriverError> {
    let at = |offset: usize, message: String| {
        DriverError::from(Located::at(path, text, offset, message))
    };
    let raw: RawDriver = toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        let mut message = err.message().trim().to_string();
        let misplaced = TOP_LEVEL
            .iter()
            .any(|key| message.starts_with(&format!("unknown field `{key}`, expected")))
            && message.contains("`path`");
        if misplaced {
            message.push_str(
                " (top-level keys must come before the first [[config]] table: after it they \
                 belong to that table)",
            );
        }
        at(offset, message)
    })?;

    let name = raw.name.get_ref().clone();
    check_name(&name).map_err(|message| at(raw.name.span().start, message))?;

    let mut check = Vec::new();
    for file in &raw.check {
        let given = PathBuf::from(file.get_ref());
        if !given.is_absolute() {
            return Err(at(
                file.span().start,
                format!("`check` paths must be absolute, not {:?}", file.get_ref()),
            ));
        }
        check.push(given);
    }

    let mut config = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in &raw.config {
        let relative = relative_path(entry.path.get_ref())
            .map_err(|message| at(entry.path.span().start, format!("config `path`: {message}")))?;
        if !seen.insert(relative.clone()) {
            return Err(at(
                entry.path.span().start,
                format!("config `path` {:?} is given twice", entry.path.get_ref()),
            ));
        }
        template::check(entry.template.get_ref(), Scope::Base).map_err(|message| {
            at(
                entry.template.span().start,
                format!("config {:?}: {message}", entry.path.get_ref()),
            )
        })?;
        let filter = entry
            .filter
            .as_ref()
            .map(|argv| {
                checked_command("filter", argv.get_ref(), Scope::Base).map_err(|message| {
                    at(
                        argv.span().start,
                        format!("config {:?}: {message}", entry.path.get_ref()),
                    )
                })
            })
            .transpose()?;
        config.push(ConfigFile {
            path: relative,
            template: entry.template.get_ref().clone(),
            filter,
        });
    }

    let Some(start) = raw.start else {
        return Err(DriverError::MissingStep {
            path: path.to_path_buf(),
            step: "start",
            hint:
                "the command that runs the MTA in the foreground, e.g. \
                   start = [\"/usr/sbin/mta\", \"-f\", \"{{work_dir}}/mta.conf\", \"--foreground\"]",
        });
    };
    let command = |step: &str, argv: &Spanned<Vec<String>>, scope: Scope| {
        checked_command(step, argv.get_ref(), scope)
            .map_err(|message| at(argv.span().start, message))
    };
    let start = command("start", &start, Scope::Base)?;

    let ready = match raw.ready {
        None => Ready::Smtp("{{listen}}".into()),
        Some(ready) => {
            let span = ready.span().start;
            match ready.into_inner() {
                RawReady::Port(port) => Ready::Smtp(format!("127.0.0.1:{port}")),
                RawReady::Address(address) => {
                    template::check(&address, Scope::Base)
                        .map_err(|message| at(span, format!("`ready`: {message}")))?;
                    if !address.contains("{{") {
                        address.parse::<std::net::SocketAddr>().map_err(|_| {
                            at(span, format!("`ready`: {address:?} is not an address like \"127.0.0.1:2525\""))
                        })?;
                    }
                    Ready::Smtp(address)
                }
                RawReady::Command(argv) => Ready::Command(
                    checked_command("ready", &argv, Scope::Base).map_err(|m| at(span, m))?,
                ),
            }
        }
    };
    let clock = match &raw.clock {
        None => DriverClock::Real,
        Some(given) => match given.get_ref().as_str() {
            "real" => DriverClock::Real,
            "faketime" => DriverClock::Faketime,
            other => {
                return Err(at(
                    given.span().start,
                    format!(
                        "`clock`: unknown value {other:?}; write \"faketime\" if the MTA runs \
                         under libfaketime's LD_PRELOAD (a dynamically linked binary that \
                         keeps its environment), else \"real\""
                    ),
                ))
            }
        },
    };
    let ready_timeout = match &raw.ready_timeout {
        None => DEFAULT_READY_TIMEOUT,
        Some(given) => humantime::parse_duration(given.get_ref()).map_err(|e| {
            at(
                given.span().start,
                format!(
                    "invalid duration {:?} ({e}); write e.g. \"20s\" or \"1m\"",
                    given.get_ref()
                ),
            )
        })?,
    };
    let inject = match raw.inject {
        None => Inject::Smtp,
        Some(inject) => {
            let span = inject.span().start;
            match inject.into_inner() {
                RawInject::Smtp => Inject::Smtp,
                RawInject::Command(argv) => Inject::Command(
                    checked_command("inject", &argv, Scope::Message).map_err(|m| at(span, m))?,
                ),
            }
        }
    };
    let optional = |step: &str, argv: &Option<Spanned<Vec<String>>>| {
        argv.as_ref()
            .map(|argv| command(step, argv, Scope::Base))
            .transpose()
    };
    let kick = optional("kick", &raw.kick)?;
    let queue = optional("queue", &raw.queue)?;
    let stop = optional("stop", &raw.stop)?;
    let version = optional("version", &raw.version)?;
    if let (Some(argv), Some(given)) = (&version, &raw.version) {
        if argv.iter().any(|arg| arg.contains("{{")) {
            return Err(at(
                given.span().start,
                "`version` runs outside any lab: it takes no placeholders".into(),
            ));
        }
    }
    let log = match &raw.log {
        None => None,
        Some(log) => {
            let relative = relative_path(log.get_ref())
                .map_err(|message| at(log.span().start, format!("`log`: {message}")))?;
            Some(relative)
        }
    };

    let listen_family = match &raw.listen_family {
        None => None,
        Some(given) => Some(match given.get_ref().as_str() {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => {
                return Err(at(
                    given.span().start,
                    format!(
                        "`listen_family`: unknown value {other:?}; write \"ipv6\" for an MTA \
                         that listens on IPv6 only (then {{{{listen}}}} is [::1]:2525), else \
                         leave it out"
                    ),
                ))
            }
        }),
    };
    let mut env = Vec::new();
    for (key, value) in &raw.env {
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(at(
                value.span().start,
                format!("[env]: {key:?} is not a variable name (letters, digits and `_`)"),
            ));
        }
        template::check(value.get_ref(), Scope::Base)
            .map_err(|message| at(value.span().start, format!("[env] {key}: {message}")))?;
        env.push((key.clone(), value.get_ref().clone()));
    }
    let mut xfail = BTreeMap::new();
    for (scenario, entry) in raw.xfail {
        if !scenario.contains('/') {
            return Err(at(
                entry.span().start,
                format!(
                    "[xfail]: {scenario:?} is not a scenario name like \"tls/starttls-verified\" \
                     (its path under scenarios/ without .toml)"
                ),
            ));
        }
        xfail.insert(scenario, entry.into_inner());
    }

    let label: &'static str = Box::leak(format!("{name} ({})", path.display()).into_boxed_str());
    Ok(DriverFile {
        install: raw
            .install
            .unwrap_or_else(|| format!("install it as {} describes", path.display())),
        name,
        description: raw.description,
        path: path.to_path_buf(),
        check,
        config,
        start,
        ready,
        ready_timeout,
        clock,
        inject,
        kick,
        queue,
        stop,
        version,
        log,
        listen_family,
        env,
        xfail,
        label,
    })
}

/// A driver's name becomes a directory name, a test-name part and a `[sut.NAME]` key.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if !well_formed {
        return Err(format!(
            "`name` {name:?} must be lowercase letters, digits, `-` and `_`, starting with a \
             letter or digit"
        ));
    }
    if SutKind::BUILT_IN.contains(&name) {
        return Err(format!(
            "`name` {name:?} is a built-in SUT's; choose another (built-in: {})",
            SutKind::BUILT_IN.join(", ")
        ));
    }
    Ok(())
}

/// A path inside the work directory: relative, no `..`.
fn relative_path(given: &str) -> Result<String, String> {
    let path = Path::new(given);
    let inside = !given.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(given.to_string())
    } else {
        Err(format!(
            "{given:?} must be a relative path inside the work directory (no `/` at the \
             start, no `..`)"
        ))
    }
}

/// A command must name a program; every argument must be a valid template.
fn checked_command(step: &str, argv: &[String], scope: Scope) -> Result<Vec<String>, String> {
    if argv.first().is_none_or(|program| program.trim().is_empty()) {
        return Err(format!(
            "`{step}` must be a non-empty command: [\"/path/to/program\", \"arg\", …]"
        ));
    }
    for arg in argv {
        template::check(arg, scope).map_err(|message| format!("`{step}`: {message}"))?;
    }
    Ok(argv.to_vec())
}
