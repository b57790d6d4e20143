//! Reading scenario files from disk and finding them in directories.

use std::path::{Component, Path, PathBuf};

use super::{validate, Scenario, ScenarioError};
use crate::excerpt::Located;

/// Reads and validates one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates scenario text; `path` names it in errors and gives it its name.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let mut scenario: Scenario = toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        Located::at(path, text, offset, err.message().trim().to_string())
    })?;
    scenario.name = scenario_name(path);
    validate::validate(&scenario)
        .map_err(|problem| Located::at(path, text, problem.offset, problem.message))?;
    Ok(scenario)
}

/// Expands the given files and directories into scenario files (`*.toml`, recursively, sorted).
pub fn find_scenarios(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut found = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|source| ScenarioError::Read {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            collect_dir(path, &mut found)?;
        } else {
            found.push(path.clone());
        }
    }
    Ok(found)
}

fn collect_dir(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let read_error = |source| ScenarioError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_dir(&entry, found)?;
        } else if entry.extension().is_some_and(|ext| ext == "toml") {
            found.push(entry);
        }
    }
    Ok(())
}

/// The scenario's name: its path below the last `scenarios` directory, without `.toml`
/// (e.g. `smtp/v6-greeting-421`), or the file stem elsewhere.
fn scenario_name(path: &Path) -> String {
    let parts: Vec<&str> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    let start = parts
        .iter()
        .rposition(|part| *part == "scenarios")
        .map_or(parts.len().saturating_sub(1), |i| i + 1);
    let name = parts[start.min(parts.len())..].join("/");
    name.strip_suffix(".toml").unwrap_or(&name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::MINIMAL_SCENARIO as MINIMAL;

    fn error_of(text: &str) -> String {
        parse(Path::new("s.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_scenario_gets_its_defaults() {
        let scenario = parse(Path::new("scenarios/baseline/x.toml"), MINIMAL).unwrap();
        assert_eq!(scenario.name, "baseline/x");
        assert_eq!(scenario.mxs[0].preference, 10);
        assert_eq!(scenario.mxs[0].families.get_ref().len(), 2);
        assert_eq!(scenario.messages[0].from.get_ref(), "alice@sender.test");
        assert!(scenario.expect.exactly_once);
        assert_eq!(scenario.expect.within.0.as_secs(), 30);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_the_allowed_keys() {
        let text = MINIMAL.replace(
            "outcome = \"delivered\"",
            "outcome = \"delivered\"\nvia_ = \"ipv4\"",
        );
        let message = error_of(&text);
        assert!(
            message.starts_with("s.toml:13:1: unknown field `via_`"),
            "{message}"
        );
        assert!(message.contains("`via`"), "{message}");
    }

    #[test]
    fn a_bad_outcome_lists_the_allowed_values() {
        let message = error_of(&MINIMAL.replace("\"delivered\"", "\"sent\""));
        assert!(message.starts_with("s.toml:12:11:"), "{message}");
        assert!(
            message.contains("delivered") && message.contains("deferred"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_duration_says_how_to_write_one() {
        let message = error_of(&MINIMAL.replace(
            "outcome = \"delivered\"",
            "outcome = \"delivered\"\nwithin = \"soon\"",
        ));
        assert!(message.contains("invalid duration \"soon\""), "{message}");
        assert!(message.contains("\"30s\""), "{message}");
    }

    #[test]
    fn names_come_from_the_path_below_scenarios() {
        assert_eq!(scenario_name(Path::new("scenarios/smtp/a.toml")), "smtp/a");
        assert_eq!(scenario_name(Path::new("/x/scenarios/net/b.toml")), "net/b");
        assert_eq!(scenario_name(Path::new("/tmp/c.toml")), "c");
    }

    #[test]
    fn directories_are_searched_recursively_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/z.toml"), "").unwrap();
        std::fs::write(dir.path().join("a.toml"), "").unwrap();
        std::fs::write(dir.path().join("notes.md"), "").unwrap();
        let found = find_scenarios(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            found,
            vec![dir.path().join("a.toml"), dir.path().join("b/z.toml")]
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/nonexistent/x.toml: cannot read scenario file"),
            "{err}"
        );
    }
}
