//! `kubectl firedrill ...`: the firedrill command line as a kubectl plugin.
fn main() -> std::process::ExitCode {
    firedrill::cli::main()
}
