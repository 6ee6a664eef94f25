//! The `bulkwatch` binary: everything lives in the library; this only hands
//! the process's exit code back to the OS.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    bulkwatch::cli::main()
}
