//! `studio`: the command line of studio-ledger. All wiring lives in the library's `cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    studio::cli::main().await
}
