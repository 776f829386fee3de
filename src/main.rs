//! The `signoff` binary: everything lives in the library; see `signoff::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    signoff::cli::main().await
}
