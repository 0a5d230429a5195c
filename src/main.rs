//! `sam4em`: the desktop app (bare `sam4em [PATH]`) and the headless command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // Before the first large buffer: the CPU backend's freed buffers are reused instead of
    // unmapped and faulted in again (`model::host_memory`; the workers give them back).
    #[cfg(feature = "model")]
    sam4em::model::host_memory::keep_freed_memory();
    let cli = sam4em::cli::Cli::parse();
    match sam4em::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the cause chain joined with ": ", the file named last.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
