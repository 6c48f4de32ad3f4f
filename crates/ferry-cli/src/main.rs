//! The `ferry` command line: build and start.
//!
//! Thin by design: parse the arguments, hand them to one file per subcommand, turn errors into
//! messages and exit codes.

mod alloc;
mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        cli::Command::Build(args) => commands::build::run(args),
        cli::Command::Start(args) => commands::start::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ferry: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
