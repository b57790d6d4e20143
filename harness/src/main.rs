//! The `mxlab` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mxlab::cli::Cli::parse();
    // Before tokio starts any thread: as an ordinary user, enter a user namespace of our own.
    if let Err(err) = mxlab::rootless::enter() {
        if cli.needs_privileges() {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MXLAB_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the tokio runtime: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(cli.execute())
}
