//! What the proxy keeps to itself: the credentials in its signoff URL never reach the
//! model or the log, and its signoff token and URL never reach the upstream.

use serde_json::json;

use crate::helpers::*;

/// A signoff URL with credentials in it (`SIGNOFF_URL`/`--url`
/// `http://user:secret@host`) is shown without them: in the refusal the model reads,
/// and in the proxy's log.
#[tokio::test]
async fn the_credentials_in_the_signoff_url_reach_neither_the_model_nor_the_log() {
    let h = harness().await;
    let fixture = fixture();
    let down = crate::common::server::free_address();
    let url = format!("http://agent:s3cr3t-pw@{down}");
    let mut command = h.proxy_command(&["--url", &url], &[fixture.to_str().unwrap()]);
    command.env("RUST_LOG", "signoff=debug");
    let mut proxy = h.proxy_with(command).await;
    // The policy cannot be read for the list (a warning in the log) ...
    proxy.client.list_all_tools().await.unwrap();
    // ... and the call is refused, saying where signoff was not reached.
    let text = &proxy.refused("echo", json!({})).await[0];
    assert!(
        text.contains(&format!("signoff is unreachable at http://{down} (")),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t") && !text.contains("agent:"),
        "{text}"
    );
    let _ = proxy.client.cancel().await;
    exit_of(&mut proxy.child).await;
    let stderr = stderr_of(&mut proxy.child).await;
    assert!(
        stderr.contains(&format!("http://{down}")),
        "the log names signoff: {stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

/// The upstream server is someone else's code: it does not inherit the token that
/// reads, cancels and spends the proxy's approvals, nor where signoff is.
#[tokio::test]
async fn the_upstream_inherits_neither_the_signoff_token_nor_the_signoff_url() {
    let h = harness().await;
    let fixture = fixture();
    let mut command = h.proxy_command(&[], &[fixture.to_str().unwrap()]);
    command
        .env("SIGNOFF_TOKEN", &h.app.token)
        .env("SIGNOFF_URL", &h.app.address);
    let proxy = h.proxy_with(command).await;
    let result = proxy
        .client
        .call_tool(call("environment", json!({})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let names: Vec<String> = serde_json::from_str(&texts(&result)[0]).unwrap();
    assert!(
        names.iter().any(|name| name == "FIXTURE_LOG"),
        "the rest of the environment is passed on: {names:?}"
    );
    for secret in ["SIGNOFF_TOKEN", "SIGNOFF_URL"] {
        assert!(!names.iter().any(|name| name == secret), "{names:?}");
    }
}

/// The proxy's `/proc` files, which only Linux's `prctl` closes to its user.
#[cfg(target_os = "linux")]
mod proc_files {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};

    use crate::helpers::*;

    /// What the upstream reads of the proxy's `/proc/PID/environ` and `cmdline` (the
    /// fixture's `parent` tool), as JSON.
    async fn parent_proc_files(proxy: &Proxy) -> Value {
        let result = proxy
            .client
            .call_tool(call("parent", json!({})))
            .await
            .unwrap();
        assert_eq!(result.is_error, Some(false), "{result:?}");
        serde_json::from_str(&texts(&result)[0]).unwrap()
    }

    /// `nobody`, whom the proxy runs as when the tests run as root.
    const NOBODY: u32 = 65534;

    /// The proxy and its upstream as one user, as an agent's are: as root, which may read
    /// every process's files (CAP_SYS_PTRACE), they run as [`NOBODY`], who then owns the
    /// test's directory (where the fixture logs its calls) and `owned` files, and runs
    /// the two binaries from there (linked, or copied across file systems), whatever
    /// directories the build's own are in. Answers the `signoff` and fixture binaries
    /// to run.
    fn as_one_unprivileged_user(h: &Harness, owned: &[&Path]) -> Unprivileged {
        use std::os::unix::fs::MetadataExt;
        let (signoff, fixture) = (PathBuf::from(env!("CARGO_BIN_EXE_signoff")), fixture());
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        if !root {
            return Unprivileged {
                signoff,
                fixture,
                user: None,
            };
        }
        let place = |binary: &Path, name: &str| {
            let placed = h.dir.path().join(name);
            if std::fs::hard_link(binary, &placed).is_err() {
                std::fs::copy(binary, &placed).unwrap();
            }
            placed
        };
        let signoff = place(&signoff, "signoff");
        let fixture = place(&fixture, "mcp_fixture");
        for path in [h.dir.path()].iter().chain(owned) {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        Unprivileged {
            signoff,
            fixture,
            user: Some(NOBODY),
        }
    }

    /// What [`as_one_unprivileged_user`] answers.
    struct Unprivileged {
        signoff: PathBuf,
        fixture: PathBuf,
        /// The user (and group) to run them as, if not the tests' own.
        user: Option<u32>,
    }

    /// A process of the proxy's user, the upstream it starts above all, cannot read the
    /// token in the proxy's environment (`/proc/PID/environ` is root's: the proxy is not
    /// dumpable), and the command line (readable by every user) does not hold it when it
    /// is given as `SIGNOFF_TOKEN` or as `SIGNOFF_TOKEN_FILE` (whose name the upstream does
    /// not inherit either).
    #[tokio::test]
    async fn the_upstream_cannot_read_the_token_in_the_proxys_environment_or_command_line() {
        let h = harness().await;
        let token_file = h.dir.path().join("token");
        std::fs::write(&token_file, format!("{}\n", h.app.token)).unwrap();
        let private = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(&token_file, private).unwrap();
        let run = as_one_unprivileged_user(&h, &[&token_file]);
        for from_file in [false, true] {
            let upstream = [run.fixture.to_str().unwrap()];
            let mut command = h.proxy_command_of(&run.signoff, &[], &upstream);
            if from_file {
                command
                    .env_remove("SIGNOFF_TOKEN")
                    .env("SIGNOFF_TOKEN_FILE", &token_file);
            }
            if let Some(user) = run.user {
                command.uid(user).gid(user);
            }
            let proxy = h.proxy_with(command).await;
            let read = parent_proc_files(&proxy).await;
            let (environ, cmdline) = (&read["environ"], read["cmdline"].as_str().unwrap());
            // Not shown when read: it is the whole environment of the test.
            assert!(
                environ
                    .as_str()
                    .unwrap()
                    .starts_with("unreadable: Permission denied"),
                "from file: {from_file}: the upstream read the proxy's environment"
            );
            assert!(cmdline.contains(" proxy "), "{cmdline}");
            assert!(!cmdline.contains(&h.app.token), "{cmdline}");
            // The token it read from the file is the one signoff knows: the call ran.
            let environment = proxy
                .client
                .call_tool(call("environment", json!({})))
                .await
                .unwrap();
            assert_eq!(environment.is_error, Some(false), "{environment:?}");
            let names = &texts(&environment)[0];
            assert!(!names.contains("SIGNOFF_TOKEN"), "{names}");
        }
    }
}
