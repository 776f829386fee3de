//! The upstream as a child process, in the proxy's environment less its signoff
//! credentials (`SIGNOFF_TOKEN`, `SIGNOFF_TOKEN_FILE`, `SIGNOFF_URL`). Its stdin and stdout are the MCP
//! transport; its stderr is copied to ours line by line, the last lines kept to explain an exit. When
//! the proxy ends it stops the child the way the MCP stdio transport asks: the child's
//! stdin closed, then `SIGTERM` if it has not exited within a grace period, then
//! `SIGKILL` after another. On Unix the child leads a process group of its own, and
//! the signals go to the whole group: a server started through a wrapper (a shell
//! script, `npx`, `uvx`) is stopped with the wrapper, and whatever the child leaves
//! running in its group when it exits is stopped the same way (`SIGTERM`, then
//! `SIGKILL`). Whatever way the proxy ends, the child does not outlive it: the proxy's
//! last step stops every child it started ([`Children::stop_all`]), also one whose
//! handle went on the way (a stop before the handshake, a failed connection); a child
//! still running when its keeper is dropped (the runtime ending) is killed; and when
//! the proxy is killed outright, a watchman shell beside it stops the whole group
//! ([`Watchman`]), and on Linux the kernel sends the child `SIGTERM` too.

use std::collections::VecDeque;
#[cfg(unix)]
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many of the child's last stderr lines are kept.
const TAIL: usize = 20;
/// The longest stderr line passed on whole; longer ones go in pieces.
const LINE_MAX: usize = 16 * 1024;
/// The most characters of a stderr line kept to explain an exit.
const KEPT_MAX: usize = 500;
/// How long a child whose session is over (it closed its stdout, or refused the
/// handshake) has to exit before it is stopped.
const EXIT_WITHIN: Duration = Duration::from_secs(1);

/// The proxy's environment variables that its child does not inherit: where signoff
/// is, the token that asks it, and the file it came from.
const PROXY_ONLY_ENV: [&str; 3] = ["SIGNOFF_TOKEN", "SIGNOFF_TOKEN_FILE", "SIGNOFF_URL"];

/// The transport to a child MCP server: its stdout and stdin.
pub type Transport = AsyncRwTransport<RoleClient, ChildStdout, ChildStdin>;

/// Whether the child still runs, and how it ended.
#[derive(Debug, Clone, Copy)]
pub enum State {
    Running,
    Exited(ExitStatus),
    /// Waiting for it failed; it is gone (killed, if it was not already).
    Lost,
}

impl State {
    /// How it ended, to follow "the MCP server"; `stopped` when the proxy stopped it.
    fn describe(self, stopped: bool) -> String {
        let status = match self {
            State::Running => return "is still running".to_owned(),
            State::Lost => return "is gone (its exit status could not be read)".to_owned(),
            State::Exited(status) => status,
        };
        #[cfg(unix)]
        let signal = status.signal();
        #[cfg(not(unix))]
        let signal = None;
        let end = match (status.code(), signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => match signal_name(signal) {
                Some(name) => format!("signal {signal}, {name}"),
                None => format!("signal {signal}"),
            },
            (None, None) => status.to_string(),
        };
        match (stopped, status.code()) {
            (true, _) => format!("did not exit and was stopped by the proxy ({end})"),
            (false, Some(code)) => format!("exited with status {code}"),
            (false, None) => format!("was killed by {end}"),
        }
    }
}

/// The names of the signals a process commonly ends by.
#[cfg(unix)]
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

#[cfg(not(unix))]
fn signal_name(_: i32) -> Option<&'static str> {
    None
}

/// Every child the proxy started, so that none outlives it.
#[derive(Clone, Default)]
pub struct Children(Arc<Mutex<Vec<Kept>>>);

/// What the proxy keeps of a started child: how to stop it, and whether it has ended.
struct Kept {
    stop: CancellationToken,
    state: watch::Receiver<State>,
}

impl Children {
    /// Stops every child still running, the way [`Child::stop`] does (its stdin is
    /// closed by then, with its transport), and waits until each has exited and what
    /// it left running in its group is stopped. Children that ended already are past
    /// stopping, and waited for only until their groups are stopped.
    pub async fn stop_all(&self) {
        let kept = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for child in &kept {
            child.stop.cancel();
        }
        for mut child in kept {
            // An error: the keeper is gone, and with it the child.
            let _ = (child.state)
                .wait_for(|state| !matches!(state, State::Running))
                .await;
        }
    }
}

/// A started child MCP server (see the module's documentation).
pub struct Child {
    tail: Arc<Mutex<VecDeque<String>>>,
    copier: JoinHandle<()>,
    state: watch::Receiver<State>,
    stop: CancellationToken,
}

impl Child {
    /// Starts `command` (`CMD ARGS…`), one of `children`; `grace` is how long it has
    /// to exit once its stdin is closed, and again after `SIGTERM`, when the proxy
    /// stops it.
    pub fn spawn(
        command: &[String],
        grace: Duration,
        children: &Children,
    ) -> anyhow::Result<(Transport, Child)> {
        let (program, args) = command.split_first().ok_or_else(|| {
            anyhow::anyhow!("no command: signoff proxy [OPTIONS] -- CMD [ARGS...]")
        })?;
        let mut command = tokio::process::Command::new(program);
        // The proxy's own credentials are not the server's: with them it could read,
        // cancel or spend the token's approvals (and the URL may carry a password).
        for name in PROXY_ONLY_ENV {
            command.env_remove(name);
        }
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own group, so that stopping it reaches what it starts; it also keeps a
        // terminal's Ctrl-C from reaching it past the proxy, which stops it in order.
        #[cfg(unix)]
        command.process_group(0);
        #[cfg(target_os = "linux")]
        stopped_with_us(&mut command);
        let mut child = command
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start {program}: {error}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            anyhow::bail!("cannot start {program}: its stdio was not piped");
        };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let copier = tokio::spawn(copy_stderr(stderr, tail.clone()));
        let (state, watched) = watch::channel(State::Running);
        let stop = CancellationToken::new();
        tokio::spawn(keep(child, stop.clone(), grace, state));
        let kept = Kept {
            stop: stop.clone(),
            state: watched.clone(),
        };
        (children.0.lock().unwrap_or_else(|e| e.into_inner())).push(kept);
        let child = Child {
            tail,
            copier,
            state: watched,
            stop,
        };
        Ok((AsyncRwTransport::new(stdout, stdin), child))
    }

    /// How it ended, once the session with it is over: it has a second to exit (its
    /// stdout may close a moment before it does), then it is stopped.
    async fn ended(&mut self) -> State {
        match self.within(EXIT_WITHIN).await {
            State::Running => self.stop().await,
            ended => ended,
        }
    }

    /// How it ended, waiting up to `within` for it to exit; `Running` if it has not.
    async fn within(&mut self, within: Duration) -> State {
        tokio::time::timeout(within, self.exited())
            .await
            .unwrap_or(State::Running)
    }

    /// How it ended, once it has.
    async fn exited(&mut self) -> State {
        match self
            .state
            .wait_for(|state| !matches!(state, State::Running))
            .await
        {
            Ok(state) => *state,
            // The keeper is gone only when the runtime is.
            Err(_) => State::Lost,
        }
    }

    /// Stops the child (its stdin is closed by then, with the transport) and waits
    /// until it has exited: `SIGTERM` after the grace period, `SIGKILL` after another.
    pub async fn stop(&mut self) -> State {
        self.stop.cancel();
        self.exited().await
    }

    /// Once the session with it is over: how it ended ([`Child::ended`]) and its last
    /// stderr lines, read to the end (at most a second after it exited), as "exited
    /// with status 3; its last stderr lines:" and those lines, to follow "the MCP
    /// server".
    pub async fn obituary(mut self) -> String {
        let state = self.ended().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.copier).await;
        let lines: Vec<String> = self
            .tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|line| format!("  {line}"))
            .collect();
        let how = state.describe(self.stop.is_cancelled());
        if lines.is_empty() {
            format!("{how}; it wrote nothing to stderr")
        } else {
            format!("{how}; its last stderr lines:\n{}", lines.join("\n"))
        }
    }
}

/// Linux: the child gets SIGTERM when the proxy dies without stopping it (killed with
/// SIGKILL, say), so it does not outlive the proxy even then. The kernel sends it when
/// the thread that started the child ends; the proxy's runtime threads (one, for
/// `signoff proxy`) live as long as the process, and the child is started on one.
#[cfg(target_os = "linux")]
fn stopped_with_us(command: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before `exec`, and calls only
    // prctl(2) and getppid(2), which are async-signal-safe, and builds an
    // `io::Error` from a raw code, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The proxy died before the line above: nobody would send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Copies the child's stderr to ours line by line, byte for byte, keeping the last
/// [`TAIL`] lines (each cut at [`KEPT_MAX`] characters). It drains the child's stderr to
/// its end whatever comes: bytes that are not UTF-8, a line longer than [`LINE_MAX`]
/// (passed on in pieces, kept once), our own stderr gone (a client that closed it) or
/// full (a client that never reads it: lines are dropped rather than waited for, see
/// [`crate::logging::lossy`]); a child whose stderr pipe fills would block.
async fn copy_stderr(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut chunk = vec![0; 8192];
    let mut line = Line::default();
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            line.bytes.push(byte);
            if byte == b'\n' || line.bytes.len() >= LINE_MAX {
                line.pass_on(&tail);
            }
        }
    }
    if !line.bytes.is_empty() {
        line.bytes.push(b'\n');
        line.pass_on(&tail);
    }
}

/// The stderr line being read, and whether it is the rest of a long one.
#[derive(Default)]
struct Line {
    bytes: Vec<u8>,
    continued: bool,
}

impl Line {
    /// Hands the bytes read to our stderr (never waiting: see `copy_stderr`), keeps
    /// the line in `tail` if it starts here, and empties it.
    fn pass_on(&mut self, tail: &Mutex<VecDeque<String>>) {
        crate::logging::lossy::stderr().send(&self.bytes);
        let ends = self.bytes.last() == Some(&b'\n');
        if !self.continued {
            let text = String::from_utf8_lossy(&self.bytes);
            let text = text.trim_end_matches(['\n', '\r']);
            let kept = match text.char_indices().nth(KEPT_MAX) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text.to_owned(),
            };
            let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(kept);
        }
        self.continued = !ends;
        self.bytes.clear();
    }
}

/// Owns the child until it exits, or stops it when `stop` is cancelled, then stops
/// what it left running in its group; says how it ended. Dropped early (the runtime
/// ending), it drops the child, which kills it.
async fn keep(
    mut child: tokio::process::Child,
    stop: CancellationToken,
    grace: Duration,
    state: watch::Sender<State>,
) {
    #[cfg(unix)]
    let group = Group::of(&child);
    #[cfg(unix)]
    let watchman = group.and_then(|group| Watchman::start(group, grace));
    let (status, sent) = tokio::select! {
        status = child.wait() => (status, Sent::Nothing),
        () = stop.cancelled() => stop_child(&mut child, grace).await,
    };
    #[cfg(unix)]
    if let Some(group) = group {
        group.stop_stragglers(grace, sent).await;
    }
    #[cfg(unix)]
    if let Some(watchman) = watchman {
        watchman.dismiss().await;
    }
    // No process group elsewhere: the child alone was stopped.
    #[cfg(not(unix))]
    let _ = sent;
    let _ = state.send(status.map_or(State::Lost, State::Exited));
}

/// The last signal the stop sequence sent to the child's group.
enum Sent {
    Nothing,
    Term,
    Kill,
}

/// The rest of the MCP stdio shutdown once the child's stdin is closed: `grace` to
/// exit, then `SIGTERM` to its group and `grace` again, then `SIGKILL`; and how far it
/// went.
async fn stop_child(
    child: &mut tokio::process::Child,
    grace: Duration,
) -> (std::io::Result<ExitStatus>, Sent) {
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return (status, Sent::Nothing);
    }
    // `id` is `None` once the child has been reaped, so its group is still its own.
    #[cfg(unix)]
    if let Some(group) = Group::of(child) {
        group.signal(libc::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return (status, Sent::Term);
        }
        group.signal(libc::SIGKILL);
    }
    let status = match child.kill().await {
        Ok(()) => child.wait().await,
        Err(error) => Err(error),
    };
    (status, Sent::Kill)
}

/// The process group the child leads (its id is the child's pid), which holds the
/// child and whatever it starts, unless they moved to groups of their own. The id
/// stays the group's while any process is left in it, even after the child is reaped.
#[cfg(unix)]
#[derive(Clone, Copy)]
struct Group(libc::pid_t);

#[cfg(unix)]
impl Group {
    /// The group of a child not yet reaped.
    fn of(child: &tokio::process::Child) -> Option<Group> {
        child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .map(Group)
    }

    /// Sends `signal` (0: none, only the check) to every process left in the group;
    /// whether any was.
    fn signal(self, signal: libc::c_int) -> bool {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(-self.0, signal) == 0 }
    }

    /// Whether any process left in the group still runs. A zombie (exited, and not
    /// yet reaped by whichever process adopted it: a container's first process often
    /// never does) is still a member to kill(2), but nothing is left to stop in it;
    /// on Linux `/proc` tells the two apart. Elsewhere, or where `/proc` cannot be
    /// read, any member counts.
    fn runs(self) -> bool {
        if !self.signal(0) {
            return false;
        }
        #[cfg(target_os = "linux")]
        if let Some(runs) = self.runs_by_proc() {
            return runs;
        }
        true
    }

    /// Whether `/proc` lists a process of the group that is not a zombie; `None`
    /// when `/proc` cannot be listed.
    #[cfg(target_os = "linux")]
    fn runs_by_proc(self) -> Option<bool> {
        let processes = std::fs::read_dir("/proc").ok()?;
        Some(processes.flatten().any(|entry| {
            // Gone since the listing, or not a process: not a member.
            std::fs::read_to_string(entry.path().join("stat"))
                .is_ok_and(|stat| running_in(&stat, self.0))
        }))
    }

    /// Once the child has exited: stops what is left running in its group, going on
    /// from the last signal the stop sequence `sent` it: `SIGTERM` (unless sent
    /// already) and `grace` to exit, then `SIGKILL` (after which nothing is left to
    /// stop).
    async fn stop_stragglers(self, grace: Duration, sent: Sent) {
        match sent {
            Sent::Kill => return,
            Sent::Term => {}
            Sent::Nothing => {
                if !self.signal(libc::SIGTERM) {
                    return;
                }
            }
        }
        // No deadline (a grace past the clock's range) is no limit.
        let deadline = tokio::time::Instant::now().checked_add(grace);
        while deadline.is_none_or(|deadline| tokio::time::Instant::now() < deadline) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !self.runs() {
                return;
            }
        }
        self.signal(libc::SIGKILL);
    }
}

/// Stops the child's group if the proxy dies without doing so (killed with `SIGKILL`,
/// say: the kernel's death signal reaches the child alone, not what it started). A
/// shell in a process group of its own (so that a signal to the proxy's group does not
/// reach it), waiting for a line on its stdin, a pipe that only the proxy holds:
/// `done` once the proxy has stopped the group itself, end of file when the proxy is
/// gone, whatever way it went. Then, as the proxy would have once the child's stdin
/// closed (as it now is), it gives the group the grace period to exit, then sends it
/// `SIGTERM`, and `SIGKILL` after the grace period again.
#[cfg(unix)]
struct Watchman {
    stdin: tokio::process::ChildStdin,
    shell: tokio::process::Child,
}

#[cfg(unix)]
impl Watchman {
    /// `None` when no shell could be started (the kernel's death signal still stops
    /// the child).
    fn start(group: Group, grace: Duration) -> Option<Watchman> {
        let script = format!(
            "trap '' INT HUP; read line; [ \"$line\" = done ] && exit 0; sleep {grace:.3}; \
             kill -s TERM -- -{group} 2>/dev/null || exit 0; sleep {grace:.3}; \
             kill -s KILL -- -{group} 2>/dev/null; exit 0",
            group = group.0,
            grace = grace.as_secs_f64(),
        );
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut shell = command
            .spawn()
            .inspect_err(|error| tracing::warn!(%error, "cannot start the upstream's watchman"))
            .ok()?;
        let stdin = shell.stdin.take()?;
        Some(Watchman { stdin, shell })
    }

    /// The proxy stopped the group itself: the watchman goes without a signal.
    async fn dismiss(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stdin.write_all(b"done\n").await;
        drop(self.stdin);
        let _ = self.shell.wait().await;
    }
}

/// Whether a process whose `/proc/PID/stat` reads `stat` is in process group `group`
/// and not a zombie. The fields after the command name (which may hold spaces and
/// parentheses) start after its last `)`: state, parent, group.
#[cfg(target_os = "linux")]
fn running_in(stat: &str, group: libc::pid_t) -> bool {
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = fields.split_ascii_whitespace();
    let (Some(state), Some(_parent), Some(pgrp)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    // Z: a zombie; X: dead, about to vanish.
    !matches!(state, "Z" | "X") && pgrp.parse() == Ok(group)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::running_in;

    #[test]
    fn a_stat_line_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = |state: &str| format!("4242 (my (odd) server) {state} 1 4200 4200 0 -1 4194560");
        assert!(running_in(&stat("S"), 4200), "asleep in the group");
        assert!(running_in(&stat("R"), 4200), "running in the group");
        assert!(!running_in(&stat("Z"), 4200), "a zombie");
        assert!(!running_in(&stat("S"), 4242), "another group");
        assert!(!running_in("4242 no parentheses S 1 4200", 4200));
    }
}
