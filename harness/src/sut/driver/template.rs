//! The tiny, strict template language of driver files.
//!
//! A template is text with placeholders `{{NAME}}` (spaces inside the braces are allowed).
//! `{{` always opens a placeholder; there is no escape, and an unclosed `{{`, an empty name or
//! an unknown name is an error naming the placeholder and the allowed ones. The names:
//!
//! | placeholder | value |
//! |---|---|
//! | `{{hostname}}` | the SUT's host name, e.g. `sut.sender.test` |
//! | `{{work_dir}}` | the instance's fresh work directory (absolute) |
//! | `{{listen}}` | the injection listener, `127.0.0.1:2525` (`[::1]:2525` with `listen_family = "ipv6"`) |
//! | `{{listen_address}}` | its address alone, `127.0.0.1` (or `::1`) |
//! | `{{listen_port}}` | its port alone, `2525` |
//! | `{{ca_file}}` | the run's CA certificate (PEM) when a fake MX offers STARTTLS; empty otherwise |
//! | `{{route.relay}}` | the scenario's `[route] relay` host; empty if none |
//! | `{{route.family}}` | the only family `[route]` allows delivery over, `ipv4` or `ipv6`; empty for both |
//! | `{{route.bind_ipv4}}`, `{{route.bind_ipv6}}` | the source address `[route]` binds for that family; empty if none |
//! | `{{resolv_conf}}` | the lab's `resolv.conf` (also bind-mounted over `/etc/resolv.conf`) |
//! | `{{setting.KEY}}` | the scenario's `[sut.NAME]` setting `KEY`; an error if it is not set |
//! | `{{setting.KEY\|DEFAULT}}` | the same, `DEFAULT` (may be empty) if it is not set |
//! | `{{settings}}` | every `[sut.NAME]` setting as `KEY = VALUE` lines (sorted; empty if none) |
//! | `{{from}}` | `inject` commands only: the envelope sender (empty for the null sender) |
//! | `{{to}}` | `inject` commands only: the recipients; an argument that is exactly `{{to}}` becomes one argument per recipient, elsewhere they are joined with `,` |
//!
//! A block `{{#if NAME}}…{{/if}}` is rendered only when the placeholder `NAME` has a non-empty
//! value (blocks do not nest), e.g.
//! `{{#if route.relay}}define(`SMART_HOST', `[{{route.relay}}]')dnl{{/if}}`.

use std::collections::BTreeMap;

/// Placeholders every template may use (`setting.KEY` aside).
pub(crate) const BASE: &[&str] = &[
    "hostname",
    "work_dir",
    "listen",
    "listen_address",
    "listen_port",
    "resolv_conf",
    "ca_file",
    "route.relay",
    "route.family",
    "route.bind_ipv4",
    "route.bind_ipv6",
    "settings",
];
/// Placeholders only `inject` commands may use.
pub(crate) const MESSAGE: &[&str] = &["from", "to"];

/// Which placeholders a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Configuration files and every step but `inject`.
    Base,
    /// The `inject` command: also `{{from}}` and `{{to}}`.
    Message,
}

impl Scope {
    /// The allowed placeholders, for error messages.
    pub(crate) fn allowed(self) -> String {
        let mut names: Vec<&str> = BASE.to_vec();
        if self == Scope::Message {
            names.extend_from_slice(MESSAGE);
        }
        let mut text: Vec<String> = names.iter().map(|n| format!("{{{{{n}}}}}")).collect();
        text.push("{{setting.KEY}}".into());
        text.push("{{setting.KEY|DEFAULT}}".into());
        text.join(", ")
    }

    fn permits(self, name: &str) -> bool {
        BASE.contains(&name)
            || (self == Scope::Message && MESSAGE.contains(&name))
            || setting_key(name).is_some()
    }
}

/// The values placeholders stand for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vars {
    /// `{{hostname}}`.
    pub hostname: String,
    /// `{{work_dir}}`.
    pub work_dir: String,
    /// `{{listen}}`.
    pub listen: String,
    /// `{{listen_address}}`.
    pub listen_address: String,
    /// `{{listen_port}}`.
    pub listen_port: String,
    /// `{{resolv_conf}}`.
    pub resolv_conf: String,
    /// `{{ca_file}}` (empty without one).
    pub ca_file: String,
    /// `{{route.relay}}`, `{{route.family}}`, `{{route.bind_ipv4}}`, `{{route.bind_ipv6}}`
    /// (each empty when not set).
    pub route: RouteVars,
    /// `{{setting.KEY}}` and `{{settings}}`.
    pub settings: BTreeMap<String, String>,
    /// `{{from}}` and `{{to}}`, while rendering an `inject` command.
    pub message: Option<(String, Vec<String>)>,
}

/// The `[route]` values as placeholders: empty strings where the scenario sets nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteVars {
    /// The relay host.
    pub relay: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The IPv4 source address.
    pub bind_ipv4: String,
    /// The IPv6 source address.
    pub bind_ipv6: String,
}

impl RouteVars {
    /// The placeholders for `route`.
    pub(crate) fn of(route: &crate::sut::SutRoute) -> Self {
        let bind = |v6: bool| {
            route
                .bind
                .iter()
                .find(|a| a.is_ipv6() == v6)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        Self {
            relay: route.relay.clone().unwrap_or_default(),
            family: route.only.map(|f| f.to_string()).unwrap_or_default(),
            bind_ipv4: bind(false),
            bind_ipv6: bind(true),
        }
    }
}

/// Placeholders naming the scenario's `[route]`.
pub(crate) const ROUTE: &[&str] = &[
    "route.relay",
    "route.family",
    "route.bind_ipv4",
    "route.bind_ipv6",
];

/// Whether `text` uses a `[route]` placeholder (so the driver applies the scenario's route).
pub(crate) fn uses_route(text: &str) -> bool {
    pieces(text).is_ok_and(|pieces| {
        pieces.iter().any(|piece| {
            matches!(piece, Piece::Placeholder(name) | Piece::If(name) if ROUTE.contains(name))
        })
    })
}

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'t> {
    Text(&'t str),
    Placeholder(&'t str),
    /// `{{#if NAME}}`: what follows up to [`Piece::EndIf`] only when `NAME` is not empty.
    If(&'t str),
    /// `{{/if}}`.
    EndIf,
}

/// Splits `text` into literal text and placeholder names (trimmed).
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            let shown: String = rest[open..].chars().take(30).collect();
            return Err(format!("unclosed placeholder starting {shown:?}"));
        };
        let name = after[..close].trim();
        if name.is_empty() || name.contains("{{") {
            return Err(format!(
                "malformed placeholder {:?}",
                &rest[open..open + close + 4]
            ));
        }
        out.push(if let Some(condition) = name.strip_prefix("#if ") {
            Piece::If(condition.trim())
        } else if name == "/if" {
            Piece::EndIf
        } else {
            Piece::Placeholder(name)
        });
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    let mut open = false;
    for piece in &out {
        match piece {
            Piece::If(name) if open => {
                return Err(format!(
                    "{{{{#if {name}}}}} inside another {{{{#if}}}} block: blocks do not nest"
                ))
            }
            Piece::If(_) => open = true,
            Piece::EndIf if !open => return Err("{{/if}} without an {{#if NAME}}".into()),
            Piece::EndIf => open = false,
            _ => {}
        }
    }
    if open {
        return Err("an {{#if NAME}} block is not closed with {{/if}}".into());
    }
    Ok(out)
}

/// `KEY` and the default of a `setting.KEY` or `setting.KEY|DEFAULT` placeholder.
fn setting_key(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix("setting.")?;
    let (key, default) = match rest.split_once('|') {
        Some((key, default)) => (key.trim(), Some(default.trim())),
        None => (rest, None),
    };
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid.then_some((key, default))
}

/// Checks that `text` is well formed and uses only placeholders `scope` allows.
pub(crate) fn check(text: &str, scope: Scope) -> Result<(), String> {
    for piece in pieces(text)? {
        if let Piece::Placeholder(name) | Piece::If(name) = piece {
            if !scope.permits(name) {
                return Err(unknown(name, scope));
            }
        }
    }
    Ok(())
}

fn unknown(name: &str, scope: Scope) -> String {
    format!(
        "unknown placeholder {{{{{name}}}}}; allowed: {}",
        scope.allowed()
    )
}

/// Renders `text` with `vars`. Fails on the errors [`check`] finds and on a `{{setting.KEY}}`
/// without default whose setting the scenario does not give.
pub(crate) fn render(text: &str, vars: &Vars) -> Result<String, String> {
    let scope = if vars.message.is_some() {
        Scope::Message
    } else {
        Scope::Base
    };
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for piece in pieces(text)? {
        match piece {
            Piece::If(name) => skipping = value(name, vars, scope)?.is_empty(),
            Piece::EndIf => skipping = false,
            _ if skipping => {}
            Piece::Text(literal) => out.push_str(literal),
            Piece::Placeholder(name) => out.push_str(&value(name, vars, scope)?),
        }
    }
    Ok(out)
}

/// Renders one argument of a command: exactly `{{to}}` becomes one argument per recipient.
pub(crate) fn render_argv(argv: &[String], vars: &Vars) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(argv.len());
    for arg in argv {
        match (&vars.message, pieces(arg)?.as_slice()) {
            (Some((_, to)), [Piece::Placeholder("to")]) => out.extend(to.iter().cloned()),
            _ => out.push(render(arg, vars)?),
        }
    }
    Ok(out)
}

fn value(name: &str, vars: &Vars, scope: Scope) -> Result<String, String> {
    Ok(match name {
        "hostname" => vars.hostname.clone(),
        "work_dir" => vars.work_dir.clone(),
        "listen" => vars.listen.clone(),
        "listen_address" => vars.listen_address.clone(),
        "listen_port" => vars.listen_port.clone(),
        "resolv_conf" => vars.resolv_conf.clone(),
        "ca_file" => vars.ca_file.clone(),
        "route.relay" => vars.route.relay.clone(),
        "route.family" => vars.route.family.clone(),
        "route.bind_ipv4" => vars.route.bind_ipv4.clone(),
        "route.bind_ipv6" => vars.route.bind_ipv6.clone(),
        "settings" => vars
            .settings
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect(),
        "from" | "to" if scope == Scope::Message => {
            let (from, to) = vars.message.as_ref().expect("scope Message has a message");
            if name == "from" {
                from.clone()
            } else {
                to.join(",")
            }
        }
        other => match setting_key(other) {
            Some((key, default)) => match (vars.settings.get(key), default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => default.to_string(),
                (None, None) => {
                    let known: Vec<&str> = vars.settings.keys().map(String::as_str).collect();
                    return Err(format!(
                        "{{{{{other}}}}}: the scenario sets no {key:?} (it sets: {}); \
                         write {{{{setting.{key}|DEFAULT}}}} to make it optional",
                        if known.is_empty() {
                            "nothing".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            },
            None => return Err(unknown(other, scope)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            hostname: "sut.sender.test".into(),
            work_dir: "/tmp/w".into(),
            listen: "127.0.0.1:2525".into(),
            listen_address: "127.0.0.1".into(),
            listen_port: "2525".into(),
            resolv_conf: "/tmp/resolv.conf".into(),
            ca_file: String::new(),
            route: RouteVars::default(),
            settings: BTreeMap::from([
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]),
            message: None,
        }
    }

    #[test]
    fn every_placeholder_renders() {
        let text = "me={{hostname}} dir={{ work_dir }} on {{listen}} dns {{resolv_conf}}\n\
                    a={{setting.a}} z={{setting.z|none}} e=[{{setting.z|}}]\n{{settings}}";
        assert_eq!(
            render(text, &vars()).unwrap(),
            "me=sut.sender.test dir=/tmp/w on 127.0.0.1:2525 dns /tmp/resolv.conf\n\
             a=1 z=none e=[]\na = 1\nb = 2\n"
        );
        assert_eq!(
            render("no placeholders", &vars()).unwrap(),
            "no placeholders"
        );
    }

    #[test]
    fn unknown_and_malformed_placeholders_are_named() {
        let err = render("x {{hostnmae}} y", &vars()).unwrap_err();
        assert!(
            err.starts_with(
                "unknown placeholder {{hostnmae}}; allowed: {{hostname}}, {{work_dir}}"
            ),
            "{err}"
        );
        assert!(!err.contains("{{from}}"), "{err}");
        assert!(check("{{from}}", Scope::Base)
            .unwrap_err()
            .contains("{{from}}"));
        assert!(check("{{from}} {{to}}", Scope::Message).is_ok());
        assert!(check("{{setting.}}", Scope::Base).is_err());
        let err = render("a {{hostname", &vars()).unwrap_err();
        assert_eq!(err, "unclosed placeholder starting \"{{hostname\"");
        assert!(render("{{}}", &vars()).unwrap_err().contains("malformed"));
    }

    #[test]
    fn listener_parts_ca_and_route_render_and_blocks_follow_their_condition() {
        let mut vars = vars();
        let text = "{{listen_address}} port {{listen_port}}\n\
                    {{#if route.relay}}relay [{{route.relay}}]\n{{/if}}\
                    {{#if ca_file}}ca {{ca_file}}\n{{/if}}family={{route.family}}.";
        assert_eq!(
            render(text, &vars).unwrap(),
            "127.0.0.1 port 2525\nfamily=."
        );
        vars.route = RouteVars::of(&crate::sut::SutRoute {
            relay: Some("smarthost.isp.test".into()),
            only: Some(crate::family::Family::Ipv6),
            bind: vec!["2001:db8::10".parse().unwrap()],
        });
        vars.ca_file = "/w/ca.pem".into();
        assert_eq!(
            render(text, &vars).unwrap(),
            "127.0.0.1 port 2525\nrelay [smarthost.isp.test]\nca /w/ca.pem\nfamily=ipv6."
        );
        assert_eq!(vars.route.bind_ipv6, "2001:db8::10");
        assert_eq!(vars.route.bind_ipv4, "");
        assert!(uses_route(text));
        assert!(!uses_route("{{listen}}"));
        let err = check("{{#if ca_file}}{{#if listen}}x{{/if}}{{/if}}", Scope::Base).unwrap_err();
        assert!(err.contains("do not nest"), "{err}");
        assert!(check("{{#if ca_file}}x", Scope::Base)
            .unwrap_err()
            .contains("not closed"));
        assert!(check("x{{/if}}", Scope::Base)
            .unwrap_err()
            .contains("without"));
        assert!(check("{{#if nope}}x{{/if}}", Scope::Base)
            .unwrap_err()
            .contains("unknown placeholder {{nope}}"));
    }

    #[test]
    fn a_missing_setting_without_default_is_an_error() {
        let err = render("{{setting.zz}}", &vars()).unwrap_err();
        assert!(err.contains("sets no \"zz\" (it sets: a, b)"), "{err}");
    }

    #[test]
    fn recipients_expand_to_arguments_or_a_list() {
        let mut vars = vars();
        vars.message = Some((
            "a@x.test".into(),
            vec!["b@y.test".into(), "c@y.test".into()],
        ));
        let argv: Vec<String> = ["sendmail", "-f", "{{from}}", "--", "{{ to }}", "to={{to}}"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            render_argv(&argv, &vars).unwrap(),
            [
                "sendmail",
                "-f",
                "a@x.test",
                "--",
                "b@y.test",
                "c@y.test",
                "to=b@y.test,c@y.test"
            ]
        );
    }
}
