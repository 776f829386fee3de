//! The upstream child's life: stopped as the MCP stdio transport asks when the client
//! leaves or the proxy is told to stop (its stdin closed, then SIGTERM, then SIGKILL),
//! never left running behind the proxy, and, when it dies on its own or at startup,
//! reported with its exit status and its last stderr lines.

use std::time::Duration;

use rmcp::ServiceExt;

use serde_json::json;

use crate::helpers::*;

/// The proxy stops its child quickly in these tests.
const GRACE: &[&str] = &["--stop-grace", "200ms"];

/// The proxy in front of `sh -c SCRIPT`, where the script finds the fixture in
/// `$FIXTURE`, with an rmcp client connected; and the shell's pid (which `exec` keeps).
async fn proxy_in_shell(h: &Harness, script: &str) -> (Proxy, u32) {
    let pidfile = h.dir.path().join("upstream.pid");
    let script = format!(
        "FIXTURE='{}'; echo $$ > '{}'; {script}",
        fixture().display(),
        pidfile.display()
    );
    let proxy = h.proxy_for(GRACE, &["sh", "-c", &script]).await;
    (proxy, pid_in(&pidfile))
}

/// The pid a script wrote to `file`.
fn pid_in(file: &std::path::Path) -> u32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|error| panic!("the upstream wrote a pid to {}: {error}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

/// The proxy in front of an upstream that outlives its closed stdin: the fixture
/// exits, then the shell waits on until SIGTERM, which it records in the file
/// returned.
async fn proxy_in_front_of_a_lingerer(h: &Harness) -> (Proxy, u32, std::path::PathBuf) {
    let stopped = h.dir.path().join("stopped");
    let script = format!(
        "trap 'echo TERM > {}; kill $! 2>/dev/null; exit 0' TERM; \"$FIXTURE\"; sleep 300 & wait",
        stopped.display()
    );
    let (proxy, pid) = proxy_in_shell(h, &script).await;
    (proxy, pid, stopped)
}

/// Whether a process with this pid runs (a zombie, exited but not yet reaped by
/// whoever adopted it, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        state != Some(Some('Z'))
    })
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn a_client_that_leaves_gets_an_upstream_that_ignores_its_closed_stdin_stopped_by_sigterm() {
    let h = harness().await;
    let (mut proxy, pid, stopped) = proxy_in_front_of_a_lingerer(&h).await;
    assert!(alive(pid));
    let _ = proxy.client.cancel().await;
    let exit = exit_of(&mut proxy.child).await;
    assert!(
        exit.success(),
        "the proxy exits 0 when its client leaves: {exit}"
    );
    assert!(!alive(pid), "the upstream does not outlive the proxy");
    assert_eq!(
        std::fs::read_to_string(&stopped).unwrap_or_default().trim(),
        "TERM",
        "the upstream was asked to stop with SIGTERM before anything harder"
    );
}

#[tokio::test]
async fn an_upstream_that_ignores_sigterm_too_is_killed_when_the_client_leaves() {
    let h = harness().await;
    // Ignored signals stay ignored across exec: sleep ignores SIGTERM as well.
    let (mut proxy, pid) = proxy_in_shell(&h, "trap '' TERM; \"$FIXTURE\"; exec sleep 300").await;
    let _ = proxy.client.cancel().await;
    let exit = exit_of(&mut proxy.child).await;
    assert!(exit.success(), "{exit}");
    assert!(!alive(pid), "an upstream that ignores SIGTERM is killed");
}

#[tokio::test]
async fn sigterm_to_the_proxy_cancels_held_calls_stops_the_upstream_and_exits_0() {
    let h = harness().await;
    let (mut proxy, upstream_pid) = proxy_in_shell(&h, "exec \"$FIXTURE\"").await;
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("delete_things", json!({"ids": [1]})))
            .await
    });
    let id = h.posted(1).await;
    signal(proxy.child.id().unwrap(), "-TERM");
    let exit = exit_of(&mut proxy.child).await;
    assert!(exit.success(), "a stopped proxy exits 0: {exit}");
    assert_eq!(h.status(&id).await, "cancelled");
    assert_eq!(h.pending().await, 0);
    assert!(
        !alive(upstream_pid),
        "the upstream is stopped with the proxy"
    );
    // The agent never hears that the call ran; nothing ran.
    let held = held.await.unwrap();
    assert!(
        held.as_ref()
            .map_or(true, |result| result.is_error == Some(true)),
        "{held:?}"
    );
    assert!(h.ran().is_empty(), "{:?}", h.ran());
}

#[tokio::test]
async fn an_upstream_killed_by_a_signal_is_reported_so_and_held_calls_get_an_error() {
    let h = harness().await;
    let script = "echo 'fixture: about to serve' >&2; exec \"$FIXTURE\"";
    let (mut proxy, upstream_pid) = proxy_in_shell(&h, script).await;
    let peer = proxy.client.peer().clone();
    let held = tokio::spawn(async move { peer.call_tool(call("delete_things", json!({}))).await });
    let id = h.posted(1).await;
    signal(upstream_pid, "-KILL");
    let held = held.await.unwrap();
    assert!(
        held.as_ref()
            .map_or(true, |result| result.is_error == Some(true)),
        "{held:?}"
    );
    let exit = exit_of(&mut proxy.child).await;
    assert_eq!(exit.code(), Some(1));
    let stderr = stderr_of(&mut proxy.child).await;
    assert!(
        stderr.contains("the MCP server was killed by signal 9, SIGKILL; its last stderr lines:")
            && stderr.contains("  fixture: about to serve"),
        "{stderr}"
    );
    assert_eq!(h.status(&id).await, "cancelled");
}

/// An upstream that never answers the handshake does not make the proxy deaf to a
/// stop: SIGTERM then ends it (exit 0, saying so), and the upstream with it.
#[tokio::test]
async fn sigterm_before_the_upstream_answers_its_handshake_stops_the_proxy_and_the_upstream() {
    let h = harness().await;
    let pidfile = h.dir.path().join("silent.pid");
    let script = format!("echo $$ > '{}'; exec sleep 300", pidfile.display());
    let mut proxy = h
        .proxy_command(GRACE, &["sh", "-c", &script])
        .spawn()
        .unwrap();
    let started = tokio::time::Instant::now();
    while !pidfile.exists() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let silent = pid_in(&pidfile);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(silent), "the upstream waits, silent");
    signal(proxy.id().unwrap(), "-TERM");
    assert!(exit_of(&mut proxy).await.success());
    let stderr = stderr_of(&mut proxy).await;
    assert!(
        stderr.contains("stopped before the MCP server answered"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the server is named \"sh\" after its command")
            && stderr.contains("give --name"),
        "a launcher's name is every server's name: {stderr}"
    );
    let gone = tokio::time::Instant::now();
    while alive(silent) && gone.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(silent),
        "the silent upstream is stopped with the proxy"
    );
}

/// A launcher (`sh -c`, as `npx` or `uvx`) that starts the server as a process of its
/// own: a stop before the server answers its handshake stops that process too, not
/// only the launcher, whether the stop is SIGTERM or ctrl-c.
#[tokio::test]
async fn a_stop_before_the_handshake_stops_what_the_upstream_started_too() {
    for stop in ["-TERM", "-INT"] {
        let h = harness().await;
        let (launcher, server) = (h.dir.path().join("sh.pid"), h.dir.path().join("server.pid"));
        let script = format!(
            "echo $$ > '{}'; (exec sleep 300) </dev/null >/dev/null 2>&1 & echo $! > '{}'; wait",
            launcher.display(),
            server.display()
        );
        let mut proxy = h
            .proxy_command(GRACE, &["sh", "-c", &script])
            .spawn()
            .unwrap();
        let started = tokio::time::Instant::now();
        while !(launcher.exists() && server.exists()) && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (launcher, server) = (pid_in(&launcher), pid_in(&server));
        assert!(alive(launcher) && alive(server), "both wait, silent");
        signal(proxy.id().unwrap(), stop);
        assert!(exit_of(&mut proxy).await.success(), "{stop}");
        let gone = eventually(|| !alive(server)).await;
        if !gone {
            signal(server, "-KILL");
        }
        assert!(
            gone,
            "{stop}: the server the launcher started is stopped with the proxy"
        );
        assert!(!alive(launcher), "{stop}");
    }
}

/// What the proxy in front of `sh -c SCRIPT`, which exits before any handshake, says
/// on stderr as it fails.
async fn startup_failure(h: &Harness, script: &str) -> Vec<u8> {
    let mut died = h
        .proxy_command(GRACE, &["sh", "-c", script])
        .spawn()
        .unwrap();
    let mut stderr = Vec::new();
    use tokio::io::AsyncReadExt;
    died.stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .await
        .unwrap();
    assert!(!exit_of(&mut died).await.success());
    stderr
}

#[tokio::test]
async fn an_upstream_that_dies_at_startup_is_an_error_with_its_exit_status_and_stderr() {
    let h = harness().await;
    let stderr = startup_failure(&h, "echo 'no such database: prod' >&2; exit 7").await;
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        stderr.contains("the MCP server did not start")
            && stderr.contains("It exited with status 7; its last stderr lines:")
            && stderr.contains("  no such database: prod"),
        "{stderr}"
    );
    let stderr = startup_failure(&h, "exit 0").await;
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(
        stderr.contains("It exited with status 0; it wrote nothing to stderr"),
        "{stderr}"
    );
    assert_eq!(h.pending().await, 0);
}

#[tokio::test]
async fn an_upstream_that_closes_its_stdout_but_runs_on_is_stopped_and_reported() {
    let h = harness().await;
    // The fixture serves (on the shell's stdin, which a background job would not
    // get) until the test has its handshake and says go; then it is killed, and the
    // shell closes its stdout and lingers, ignoring SIGTERM.
    let go = h.dir.path().join("go");
    let script = format!(
        "trap '' TERM; exec 3<&0; \"$FIXTURE\" <&3 & FIX=$!; \
         while [ ! -e '{}' ]; do sleep 0.05; done; kill -9 $FIX; exec 1>&-; exec sleep 300",
        go.display()
    );
    let (mut proxy, pid) = proxy_in_shell(&h, &script).await;
    std::fs::write(&go, "").unwrap();
    let exit = exit_of(&mut proxy.child).await;
    assert_eq!(exit.code(), Some(1));
    let stderr = stderr_of(&mut proxy.child).await;
    assert!(
        stderr.contains(
            "the MCP server did not exit and was stopped by the proxy (signal 9, SIGKILL)"
        ),
        "{stderr}"
    );
    assert!(!alive(pid), "the lingering upstream was stopped");
}

/// Bytes that are not UTF-8, then a 300 KB line (more than a pipe holds), on stderr.
const UNRULY_STDERR: &str =
    r"printf 'bad \377\376 bytes\n' >&2; head -c 300000 /dev/zero | tr '\0' x >&2; echo >&2";

#[tokio::test]
async fn an_upstreams_stderr_is_drained_whatever_it_writes_even_with_our_stderr_gone() {
    let h = harness().await;
    let script = format!("{UNRULY_STDERR}; exec '{}'", fixture().display());
    let mut process = h
        .proxy_command(GRACE, &["sh", "-c", &script])
        .spawn()
        .unwrap();
    // The client closed the proxy's stderr: writing to it fails (EPIPE).
    drop(process.stderr.take());
    let stdin = process.stdin.take().unwrap();
    let stdout = process.stdout.take().unwrap();
    let client = tokio::time::timeout(Duration::from_secs(10), ().serve((stdout, stdin)))
        .await
        .expect("the upstream, its stderr drained, gets to serve")
        .expect("handshake");
    let result = client
        .call_tool(call("echo", json!({"text": "still here"})))
        .await
        .unwrap();
    assert_eq!(texts(&result), [r#"echo ran with {"text":"still here"}"#]);

    // With our stderr there, all of it is passed on byte for byte, and the last lines
    // explain the exit.
    let script = format!("{UNRULY_STDERR}; echo 'giving up' >&2; exit 4");
    let stderr = startup_failure(&h, &script).await;
    let bad = b"bad \xff\xfe bytes\n";
    assert!(
        stderr.windows(bad.len()).any(|window| window == bad),
        "the bytes passed on as they came"
    );
    let long = "x".repeat(300_000);
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(
        stderr.matches(&long).count(),
        1,
        "the long line passed on whole, once"
    );
    let kept = format!("\n  {}…\n", "x".repeat(500));
    assert!(
        stderr.contains("It exited with status 4; its last stderr lines:")
            && stderr.contains("\n  bad \u{fffd}\u{fffd} bytes\n")
            && stderr.contains(&kept)
            && stderr.contains("\n  giving up"),
        "{}",
        stderr.replace(&long, "<300,000 x>")
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_proxy_killed_outright_still_takes_its_upstream_down() {
    let h = harness().await;
    let (mut proxy, pid, stopped) = proxy_in_front_of_a_lingerer(&h).await;
    signal(proxy.child.id().unwrap(), "-KILL");
    let exit = exit_of(&mut proxy.child).await;
    assert_eq!(exit.code(), None, "killed: {exit}");
    assert!(
        eventually(|| !alive(pid)).await,
        "the upstream does not outlive a proxy killed with SIGKILL"
    );
    assert_eq!(
        std::fs::read_to_string(&stopped).unwrap_or_default().trim(),
        "TERM"
    );
}

/// The proxy in front of an upstream that first starts a process of its own in the
/// background (`STRAGGLER`, its stdio on /dev/null), then execs the fixture; and the
/// pids of the upstream and of that process.
async fn proxy_in_front_of_a_parent(h: &Harness, straggler: &str) -> (Proxy, u32, u32) {
    let pidfile = h.dir.path().join("straggler.pid");
    let script = format!(
        "({straggler}) </dev/null >/dev/null 2>&1 & echo $! > '{}'; exec \"$FIXTURE\"",
        pidfile.display()
    );
    let (proxy, pid) = proxy_in_shell(h, &script).await;
    let straggler = pid_in(&pidfile);
    assert!(alive(straggler));
    (proxy, pid, straggler)
}

#[tokio::test]
async fn what_the_upstream_started_is_stopped_with_it_even_when_it_ignores_sigterm() {
    let h = harness().await;
    // The fixture exits on its closed stdin; what it left behind ignores SIGTERM.
    let (mut proxy, pid, straggler) =
        proxy_in_front_of_a_parent(&h, "trap '' TERM; exec sleep 300").await;
    let _ = proxy.client.cancel().await;
    let exit = exit_of(&mut proxy.child).await;
    assert!(exit.success(), "{exit}");
    assert!(!alive(pid));
    assert!(
        eventually(|| !alive(straggler)).await,
        "what the upstream started does not outlive the proxy"
    );
}

#[tokio::test]
async fn what_the_upstream_started_does_not_outlive_a_proxy_killed_outright() {
    let h = harness().await;
    // The kernel's death signal reaches the upstream alone, not what it started.
    let (mut proxy, pid, straggler) = proxy_in_front_of_a_parent(&h, "exec sleep 300").await;
    signal(proxy.child.id().unwrap(), "-KILL");
    let exit = exit_of(&mut proxy.child).await;
    assert_eq!(exit.code(), None, "killed: {exit}");
    assert!(eventually(|| !alive(pid)).await, "the upstream is stopped");
    assert!(
        eventually(|| !alive(straggler)).await,
        "what the upstream started does not outlive a proxy killed with SIGKILL"
    );
}

#[tokio::test]
async fn what_a_crashed_upstream_left_running_is_stopped_with_the_proxy() {
    let h = harness().await;
    let (mut proxy, pid, straggler) = proxy_in_front_of_a_parent(&h, "exec sleep 300").await;
    signal(pid, "-KILL");
    let exit = exit_of(&mut proxy.child).await;
    assert_eq!(exit.code(), Some(1), "an upstream that dies ends the proxy");
    assert!(
        eventually(|| !alive(straggler)).await,
        "what the dead upstream started does not outlive the proxy"
    );
}

/// Runs the proxy of `command` under a process that adopts the orphans below it and
/// never reaps them (`PR_SET_CHILD_SUBREAPER`), as a container's first process often
/// does not: a process the upstream left that exits stays a zombie in the group.
fn under_a_non_reaping_adopter(
    python: &std::path::Path,
    command: tokio::process::Command,
) -> tokio::process::Command {
    const ADOPTER: &str = "import ctypes, subprocess, sys\n\
        assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0\n\
        sys.exit(subprocess.Popen(sys.argv[1:]).wait())";
    let proxy = command.as_std();
    let mut adopted = tokio::process::Command::new(python);
    adopted
        .args(["-c", ADOPTER])
        .arg(proxy.get_program())
        .args(proxy.get_args());
    for (name, value) in proxy.get_envs() {
        match value {
            Some(value) => adopted.env(name, value),
            None => adopted.env_remove(name),
        };
    }
    adopted
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    adopted
}

#[tokio::test]
async fn a_straggler_that_exited_unreaped_does_not_hold_up_the_proxys_exit() {
    let Some(python) = crate::common::deps::python("ctypes") else {
        return;
    };
    let h = harness().await;
    let pidfile = h.dir.path().join("straggler.pid");
    // The straggler exits at once; the fixture (its parent, by exec) never reaps it,
    // and once the fixture is gone neither does its adopter.
    let script = format!(
        "FIXTURE='{}'; (exit 0) </dev/null >/dev/null 2>&1 & echo $! > '{}'; exec \"$FIXTURE\"",
        fixture().display(),
        pidfile.display()
    );
    let grace = ["--stop-grace", "20s"];
    let command = h.proxy_command(&grace, &["sh", "-c", &script]);
    let mut proxy = h
        .proxy_with(under_a_non_reaping_adopter(&python, command))
        .await;
    let straggler = pid_in(&pidfile);
    assert!(
        eventually(|| !alive(straggler)).await,
        "the straggler has exited"
    );
    let _ = proxy.client.cancel().await;
    let exit = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait())
        .await
        .expect("the proxy exits without waiting out its 20 s grace for a zombie")
        .unwrap();
    assert!(exit.success(), "{exit}");
}

/// A client that pipes the proxy's stderr and never reads it: once the pipe is full,
/// what the upstream writes there is dropped rather than waited for, so the proxy
/// keeps answering calls and cancels. When stderr is read again, one line says how
/// much was lost.
#[tokio::test]
async fn a_stderr_nobody_reads_does_not_stop_the_proxy_and_the_loss_is_reported_once_read() {
    let h = harness().await;
    let mut proxy = h.proxy(GRACE).await;
    let mut stderr = proxy.child.stderr.take().unwrap();
    let answered = Duration::from_secs(20);
    // 4 MiB: more than the pipe (64 KiB) and the proxy's queue (1 MiB) hold.
    let shout = proxy.client.call_tool(call("shout", json!({"kib": 4096})));
    let shouted = tokio::time::timeout(answered, shout)
        .await
        .expect("the call that filled stderr is answered")
        .unwrap();
    assert_eq!(texts(&shouted), ["wrote 4096 KiB to stderr"]);
    let echo = proxy
        .client
        .call_tool(call("echo", json!({"text": "still here"})));
    let echoed = tokio::time::timeout(answered, echo)
        .await
        .expect("a call after it is answered")
        .unwrap();
    assert_eq!(texts(&echoed), [r#"echo ran with {"text":"still here"}"#]);

    let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
        call("delete_things", json!({})),
    ));
    let handle = (proxy.client.peer())
        .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
        .await
        .unwrap();
    let id = h.posted(1).await;
    handle.cancel(None).await.unwrap();
    let status = h.status_becomes(&id, "cancelled").await;
    assert_eq!(status, "cancelled", "the cancel was heard");

    let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = read.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0; 65536];
        while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
            reader.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let notice = "bytes of stderr dropped: nobody was reading it\n";
    let reported = || String::from_utf8_lossy(&read.lock().unwrap()).contains(notice);
    assert!(eventually(reported).await, "the loss is reported");
    let text = String::from_utf8_lossy(&read.lock().unwrap()).into_owned();
    let line = text.lines().find(|line| line.ends_with(notice.trim_end()));
    let dropped: u64 = line
        .and_then(|line| line.strip_prefix("signoff proxy: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("one line: {line:?}"));
    assert!(
        dropped >= 2 << 20,
        "most of the 4 MiB was dropped: {dropped}"
    );

    let _ = proxy.client.cancel().await;
    assert!(exit_of(&mut proxy.child).await.success());
}
