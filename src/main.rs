//! The `signoff` binary: everything lives in the library; see `signoff::cli`.

// No function over 80 lines (clippy.toml); CI denies warnings.
#![warn(clippy::too_many_lines)]

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: 4-15 % more clicks and gets per core; an idle
/// server holds 3.5 MiB of anonymous memory against glibc's 2.8 (docs/performance-journal.md,
/// "Allocator and LTO").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A variable set to "" is one left unset (see `config::BLANK_IS_UNSET`).
    for name in signoff::config::blank_variables(|name| std::env::var_os(name)) {
        // SAFETY: single-threaded here: the runtime starts below.
        unsafe { std::env::remove_var(name) };
    }
    // Secrets handed over as files (`NAME_FILE`) become `NAME` before anything reads the
    // environment, and before any other thread exists (so setting it is sound).
    match signoff::config::secrets_from_files(|name| std::env::var(name).ok()) {
        Ok(secrets) => {
            for (name, value) in secrets {
                // SAFETY: single-threaded here: the runtime starts below.
                unsafe { std::env::set_var(name, value) };
            }
        }
        // A secret given both ways is a setting refused, as clap refuses one: exit code 2.
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(error.exit_code());
        }
    }
    // Every TLS client is given ring by `signoff::tls`; one built without a config
    // (reqwest's `Client::new()`) finds it as the process's default instead of panicking.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // SQLite allocates through glibc's malloc, which gives each thread that allocates an
    // arena of its own, and sqlx runs each SQLite connection on a thread (the writer,
    // eight readers, the watcher, the checkpointer): under load their freed pages stayed
    // in eleven arenas, 14-20 MiB more with 100,000 pending (docs/performance-journal.md, "The
    // load bench's memory step"). Rust's allocations are mimalloc's, above.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a tuning call, made before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // `signoff proxy` serves one MCP client, and its calls mostly wait: one thread is
    // plenty, and one thread allocates from one malloc arena, not one per worker
    // (a smaller process per held call). Everything else gets a thread per core.
    let proxy = std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "proxy");
    let mut builder = if proxy {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(signoff::cli::main());
    // What `signoff proxy` queued for stderr goes out before the process ends, unless
    // nobody reads it (see `signoff::logging::lossy`).
    signoff::logging::lossy::settle_stderr(std::time::Duration::from_secs(1));
    code
}
