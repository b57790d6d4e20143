//! Errors from loading a scenario, with the place in the file they refer to.

use std::path::PathBuf;

use crate::excerpt::Located;

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
    /// The file is not valid TOML or does not match the scenario format: the place and the
    /// lines around it.
    #[error(transparent)]
    Invalid(#[from] Located),
}
