//! The `changetrail` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use clap::error::ErrorKind;
use std::process::ExitCode;

/// Ingest allocates and frees many small objects per span; glibc's allocator spends a third of the
/// time on that and fragments, mimalloc neither (measured with `bench ingest`; tests/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match changetrail::app::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; a usage error is exit 3 (src/core/ledger/FORMAT.md).
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(3),
            };
        }
    };
    // The demo prints its own summary; request lines and the generated-key warning would bury it.
    let log = if matches!(cli.command, changetrail::app::cli::Command::Demo(_))
        && cli.log == changetrail::app::cli::DEFAULT_LOG
    {
        "warn,changetrail::app::keyfile=error"
    } else {
        cli.log.as_str()
    };
    changetrail::app::telemetry::init_with(log, cli.log_format);
    let is_verify = matches!(
        cli.command,
        changetrail::app::cli::Command::Verify(_) | changetrail::app::cli::Command::VerifyReport(_)
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(changetrail::app::cli::run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            // For verify, anything that stops it from running is a usage or configuration error.
            ExitCode::from(if is_verify { 3 } else { 1 })
        }
    }
}
