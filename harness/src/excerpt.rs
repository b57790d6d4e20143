//! Where in a file a user wrote (a scenario, a driver file) a problem is: its line and column
//! and an excerpt of the lines around it with the spot underlined, rendered by
//! annotate-snippets (rustc's and cargo's renderer).

use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

/// A place in a text, found from a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The lines around the place, the value there underlined, with line numbers.
    pub excerpt: String,
}

impl Place {
    /// The place of byte `offset` in `source` (clamped to the text).
    pub fn at(source: &str, offset: usize) -> Place {
        let offset = floor_char_boundary(source, offset.min(source.len()));
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..offset].chars().count() + 1;
        let report = [Group::with_level(Level::ERROR).element(
            Snippet::source(source)
                .fold(true)
                .annotation(AnnotationKind::Primary.span(token(source, offset))),
        )];
        let excerpt = Renderer::plain().render(&report).to_string();
        Place {
            line,
            column,
            excerpt,
        }
    }
}

/// A problem at a place in a file the user wrote: `file:line:column: message` and the
/// excerpt below it. Scenario and driver-file errors both carry one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {message}\n{}", path.display(), place.line, place.column, place.excerpt)]
pub struct Located {
    /// The file.
    pub path: PathBuf,
    /// Where in it.
    pub place: Place,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Located {
    /// The problem `message` at byte `offset` of `source`, the text of `path`.
    pub fn at(path: &Path, source: &str, offset: usize, message: String) -> Located {
        Located {
            path: path.to_path_buf(),
            place: Place::at(source, offset),
            message,
        }
    }
}

/// The value that starts at `offset`: a quoted string up to its closing quote, an array or
/// table up to the end of its line, anything else up to the next space or comma.
fn token(source: &str, offset: usize) -> Range<usize> {
    let rest = &source[offset..];
    let line = rest.split('\n').next().unwrap_or_default().trim_end();
    let len = match line.chars().next() {
        Some(quote @ ('"' | '\'')) => line[1..].find(quote).map_or(line.len(), |end| end + 2),
        Some('[' | '{') => line.len(),
        Some(_) => line
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(line.len()),
        None => 0,
    };
    offset..offset + len
}

/// The largest char boundary at or below `offset`.
fn floor_char_boundary(source: &str, mut offset: usize) -> usize {
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        let place = |offset| {
            let place = Place::at(text, offset);
            (place.line, place.column)
        };
        assert_eq!(place(0), (1, 1));
        assert_eq!(place(6), (2, 1));
        assert_eq!(place(9), (2, 4));
        assert_eq!(place(100), (3, 1));
    }

    #[test]
    fn the_excerpt_underlines_the_value_at_the_place() {
        let text = "[expect]\nqueried = [\"example.test MX\"]\nvia = \"ipv7\"\n";
        let place = Place::at(text, text.find("\"ipv7\"").unwrap());
        assert_eq!((place.line, place.column), (3, 7));
        assert!(
            place.excerpt.contains("3 | via = \"ipv7\""),
            "{}",
            place.excerpt
        );
        assert!(
            place.excerpt.contains("|       ^^^^^^"),
            "{}",
            place.excerpt
        );
        let place = Place::at(text, text.find('[').unwrap());
        assert!(place.excerpt.contains("^^^^^^^^"), "{}", place.excerpt);
        let place = Place::at("n = 1, m", 4);
        assert!(
            place.excerpt.contains("|     ^\n") || place.excerpt.ends_with("|     ^"),
            "{}",
            place.excerpt
        );
    }

    #[test]
    fn offsets_inside_a_character_or_past_the_end_do_not_panic() {
        let text = "name = \"ñandú\"";
        for offset in 0..=text.len() + 2 {
            let _ = Place::at(text, offset);
        }
        let _ = Place::at("", 0);
    }
}
