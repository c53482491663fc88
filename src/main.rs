//! The `herald` binary: the command line (crates/herald-cli) given the router with the
//! dashboard (`herald::http::router`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    herald::cli::main(herald::http::router)
}
