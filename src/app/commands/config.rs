//! `changetrail config`: the configuration as the binary knows it.

use crate::app::cli::ConfigCommand;
use crate::app::config::DEFAULTS;
use std::io::Write;

/// Runs a `config` subcommand; returns the exit code.
pub fn run(cmd: ConfigCommand) -> anyhow::Result<i32> {
    match cmd {
        ConfigCommand::Defaults => {
            let mut out = std::io::stdout().lock();
            // Byte for byte what is compiled in, so the output is a valid changetrail.toml. A
            // reader that stops early (`| head`) is not an error.
            match out
                .write_all(DEFAULTS.as_bytes())
                .and_then(|()| out.flush())
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
    }
}
