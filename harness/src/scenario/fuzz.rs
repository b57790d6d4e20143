//! Property tests: malformed scenario files never panic, and every error points into the file.

use std::path::Path;

use proptest::prelude::*;

use super::{parse, ScenarioError};

const VALID: &str = r#"description = "d"
tags = ["a"]

[[mx]]
name = "mx1"
domain = "example.test"
preference = 10

[[fault]]
on = "mx1"
family = "ipv6"
net = { loss = 30 }
window = { from = "1s", until = "5s" }

[[fault]]
on = "mx1"
dns = { type = "AAAA", answer = { delay = "3s" } }

[[message]]
to = ["bob@example.test"]
size = 100

[expect]
outcome = "delivered"
via = "ipv4"
tried = ["ipv6"]
within = "30s"
"#;

/// Errors name a line and column inside the text.
fn check(text: &str) {
    match parse(Path::new("fuzz.toml"), text) {
        Ok(_) => {}
        Err(ScenarioError::Invalid(located)) => {
            let (line, column) = (located.place.line, located.place.column);
            let lines = text.split('\n').count();
            assert!(line >= 1 && line <= lines.max(1), "line {line} of {lines}");
            assert!(column >= 1);
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn mutated_scenarios_never_panic(
        cut in 0..VALID.len(),
        len in 0usize..40,
        insert in "[\\[\\]{}=\",.a-z0-9 \n#-]{0,12}",
    ) {
        let mut text = VALID.to_string();
        let start = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        check(&text);
    }

    #[test]
    fn any_value_in_any_field_never_panics(
        field in prop::sample::select(vec!["name", "domain", "preference", "on", "family", "net", "to", "size", "outcome", "via", "within", "tried"]),
        value in prop::sample::select(vec!["\"\"", "-1", "4294967296", "[]", "{}", "\"ipv7\"", "\"0s\"", "{ loss = 0 }", "\"x@y\"", "1.5", "true"]),
    ) {
        let text: String = VALID
            .lines()
            .map(|line| match line.split_once(" = ") {
                Some((key, _)) if key == field => format!("{key} = {value}"),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        check(&text);
    }
}
