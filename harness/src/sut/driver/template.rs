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
//! | `{{listen}}` | the injection listener, `127.0.0.1:2525` |
//! | `{{resolv_conf}}` | the lab's `resolv.conf` (also bind-mounted over `/etc/resolv.conf`) |
//! | `{{setting.KEY}}` | the scenario's `[sut.NAME]` setting `KEY`; an error if it is not set |
//! | `{{setting.KEY\|DEFAULT}}` | the same, `DEFAULT` (may be empty) if it is not set |
//! | `{{settings}}` | every `[sut.NAME]` setting as `KEY = VALUE` lines (sorted; empty if none) |
//! | `{{from}}` | `inject` commands only: the envelope sender (empty for the null sender) |
//! | `{{to}}` | `inject` commands only: the recipients; an argument that is exactly `{{to}}` becomes one argument per recipient, elsewhere they are joined with `,` |

use std::collections::BTreeMap;

/// Placeholders every template may use (`setting.KEY` aside).
pub(crate) const BASE: &[&str] = &["hostname", "work_dir", "listen", "resolv_conf", "settings"];
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
    /// `{{resolv_conf}}`.
    pub resolv_conf: String,
    /// `{{setting.KEY}}` and `{{settings}}`.
    pub settings: BTreeMap<String, String>,
    /// `{{from}}` and `{{to}}`, while rendering an `inject` command.
    pub message: Option<(String, Vec<String>)>,
}

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'t> {
    Text(&'t str),
    Placeholder(&'t str),
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
        out.push(Piece::Placeholder(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
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
        if let Piece::Placeholder(name) = piece {
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
    for piece in pieces(text)? {
        match piece {
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
        "resolv_conf" => vars.resolv_conf.clone(),
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
            resolv_conf: "/tmp/resolv.conf".into(),
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
