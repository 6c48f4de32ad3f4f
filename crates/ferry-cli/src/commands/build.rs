//! `ferry build`: resolve the app directory, run the build, report.

use std::process::ExitCode;

use anyhow::Context;
use ferry_build::{BuildError, BuildOptions, BuildReport};

use crate::cli::BuildArgs;

/// Runs `ferry build`. A failed `next build` keeps its exit code.
pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let app_dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("app directory {} does not exist", args.dir.display()))?;
    let mut options = BuildOptions::new(app_dir);
    options.next_args = args.next_args;
    options.out_dir = args.out;
    match ferry_build::build(&options) {
        Ok(report) => {
            print_report(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(err @ BuildError::NextBuildFailed { .. }) => {
            eprintln!("ferry: error: {err}");
            let code = u8::try_from(err.exit_code()).unwrap_or(1).max(1);
            Ok(ExitCode::from(code))
        }
        Err(err) => Err(err.into()),
    }
}

fn print_report(report: &BuildReport) {
    println!(
        "ferry: bundle written to {} ({:?}, build id {}) in {:.1}s (next build {:.1}s, bundle {:.1}s)",
        report.bundle_dir.display(),
        report.kind,
        report.build_id,
        report.total_time.as_secs_f64(),
        report.next_build_time.as_secs_f64(),
        report.bundle_time.as_secs_f64(),
    );
    println!("ferry: {:?}", report.stats);
}
