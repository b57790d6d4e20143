//! Errors from loading a scenario, with the place in the file they refer to.

use std::path::PathBuf;

use crate::excerpt::Place;

/// A scenario file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{}: cannot read scenario file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the scenario format.
    #[error("{}:{line}:{column}: {message}\n{excerpt}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What is wrong and what is allowed.
        message: String,
        /// The lines around the offending text, underlined.
        excerpt: String,
    },
}

impl ScenarioError {
    /// An [`ScenarioError::Invalid`] located at byte `offset` of `source`.
    pub(crate) fn at(path: &std::path::Path, source: &str, offset: usize, message: String) -> Self {
        let Place {
            line,
            column,
            excerpt,
        } = Place::at(source, offset);
        ScenarioError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
            excerpt,
        }
    }
}
