//! `mxlab chaos`: seeded random worlds, every SUT judged against invariants and against each
//! other, and what breaks shrunk to a scenario file.
//!
//! A [`world::World`] is drawn from a proptest strategy seeded by the campaign's seed
//! ([`campaign::rng`]), rendered to scenario text and loaded through the scenario parser
//! ([`render::load`]), so the file chaos keeps is exactly what ran. Each run is read into an
//! [`oracle::Story`]; [`oracle::breaches`] checks the invariants of RFC 5321 §5 against the
//! world's plan and [`oracle::disagreements`] compares the SUTs. A world that breaks
//! something is shrunk with the strategy's value tree ([`shrink::shrink`]) while it still does.

pub mod campaign;
pub mod oracle;
pub mod render;
pub mod shrink;
pub mod world;

/// Why a campaign could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The output directory or a file in it could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A generated world did not render to a valid scenario (a bug in chaos itself).
    #[error("a generated world is not a valid scenario: {0}")]
    Render(#[from] crate::scenario::ScenarioError),
    /// The strategy refused to draw a world.
    #[error("cannot draw a world: {0}")]
    Generate(String),
}
