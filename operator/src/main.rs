//! `firedrill`: rehearse the loss of a whole data center.
fn main() -> std::process::ExitCode {
    firedrill::cli::main()
}
