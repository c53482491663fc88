//! `herald-fakes`: the binary of crates/herald-fakes (fake Twilio and WhatsApp Cloud API
//! servers), built with this package so the tests find it as `CARGO_BIN_EXE_herald-fakes`.

fn main() -> std::process::ExitCode {
    herald_fakes::main()
}
