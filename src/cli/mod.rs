//! The command line.

pub mod decode;

/// Runs the binary and returns its exit code.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
