//! One test per scenario in ../scenarios against the MTA the driver file describes.

fn main() {
    mxlab::testing::main(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"),
        // In an MTA's own repository this is its own driver file, pointing at its build.
        &[concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../drivers/sendmail.toml"
        )],
    )
}
