//! The `herald` binary: parse the command line and hand off to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    herald::cli::run(herald::cli::Cli::parse())
}
