//! What the benches share.

/// What `cargo bench` passes to every bench binary: `--bench` and maybe a name filter, both
/// ignored.
#[derive(clap::Args)]
pub struct CargoBenchArgs {
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// A bench name filter from `cargo bench` (ignored).
    #[arg(hide = true)]
    filter: Option<String>,
}
