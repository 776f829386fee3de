//! Real `signoff serve` processes for tests that need several of them (replicas) or
//! need to kill one (crash safety).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `signoff serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub address: String,
}

/// Runs a one-shot `signoff` command against `database_url` and returns its stdout.
pub fn signoff(args: &[&str], database_url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "error")
        .output()
        .expect("signoff runs");
    assert!(
        output.status.success(),
        "signoff {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Server {
    /// Starts `signoff serve` on a free port with `env`, and waits until it answers.
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> Server {
        Self::start_logging(database_url, env, Stdio::inherit())
    }

    /// Like [`Server::start`], its log (stderr) going to `log`.
    pub fn start_logging(
        database_url: &str,
        env: &[(&str, &str)],
        log: impl Into<Stdio>,
    ) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_signoff"));
        command
            .args(["serve", "--listen", &listen])
            .env("DATABASE_URL", database_url)
            .env(
                "RUST_LOG",
                std::env::var("SIGNOFF_TEST_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("signoff serve starts");
        let server = Server {
            child,
            address: format!("http://{listen}"),
        };
        server.wait_until_up(&listen);
        server
    }

    fn wait_until_up(&self, listen: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(listen).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("signoff serve did not listen on {listen} within 30 s");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flushing; what a crash or an OOM kill does.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to `limit` for `check` to hold, polling; for effects of other processes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
