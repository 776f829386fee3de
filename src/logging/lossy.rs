//! `signoff proxy`'s stderr, written by a thread of its own so that nothing else ever
//! waits for it. The proxy runs on one thread (src/main.rs): a blocking write to a
//! stderr pipe that its client never reads (64 KiB fill one) would stop it from
//! answering anything, its client's cancels and leaving included. Here a writer hands
//! its bytes to a queue and goes on. The queue holds at most a byte budget (what is
//! queued and what the thread is writing); a write that does not fit is dropped whole
//! (a log line or a line of the child's stderr, never half of one) and counted, and
//! once the thread has caught up it says in one line how many bytes were lost.
//! `signoff serve` keeps a plain blocking stderr: it has many threads, and whoever
//! runs it reads what it says.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How many bytes stderr may hold back before writes are dropped.
pub const BUDGET: usize = 1024 * 1024;

/// A writer to a sink that may block, which never blocks itself (see the module's
/// documentation). Clones write to the same queue; the thread ends once every clone
/// is dropped and what they queued is written.
#[derive(Clone)]
pub struct Lossy {
    handle: Arc<Handle>,
}

/// Ends the writing thread when the last [`Lossy`] goes.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Something to write, or the last writer gone.
    work: Condvar,
    /// The thread has caught up (or stopped).
    idle: Condvar,
    budget: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    held: usize,
    /// Bytes dropped and not yet reported.
    dropped: u64,
    /// The thread is writing.
    busy: bool,
    /// Every [`Lossy`] is gone: the thread writes what is left and ends.
    closed: bool,
    /// The thread could not start, or has ended: every write is dropped.
    stopped: bool,
}

/// What the thread writes next.
enum Work {
    Bytes(VecDeque<Vec<u8>>),
    Notice(u64),
    Stop,
}

impl Lossy {
    /// Writes to `sink` from a thread of its own, holding back at most `budget` bytes.
    /// If the thread cannot be started, everything written is dropped: the process has
    /// bigger problems, and blocking here is what this type is for not doing.
    pub fn new<S: Write + Send + 'static>(sink: S, budget: usize) -> Lossy {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            idle: Condvar::new(),
            budget,
        });
        let writer = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || writer.write_to(sink));
        if started.is_err() {
            shared.lock().stopped = true;
        }
        Lossy {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// Queues `bytes` whole, or drops them whole when they do not fit; never waits for
    /// the sink.
    pub fn send(&self, bytes: &[u8]) {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if state.stopped || bytes.len() > shared.budget.saturating_sub(state.held) {
            state.dropped = state.dropped.saturating_add(bytes.len() as u64);
            return;
        }
        state.held += bytes.len();
        state.queue.push_back(bytes.to_vec());
        shared.work.notify_one();
    }

    /// Queues `text` and a line break (see [`Lossy::send`]).
    pub fn line(&self, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        self.send(&bytes);
    }

    /// Waits up to `within` for everything queued to be written (and any loss
    /// reported); whether it was. For the end of the process, whose exit would
    /// otherwise cut the queue short, without hanging on a stderr nobody reads.
    pub fn settle(&self, within: Duration) -> bool {
        let shared = &self.handle.shared;
        let deadline = Instant::now() + within;
        let mut state = shared.lock();
        loop {
            let caught_up = state.queue.is_empty() && state.dropped == 0 && !state.busy;
            if caught_up || state.stopped {
                return caught_up;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match shared.idle.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters and a queue that no panic leaves half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The thread: writes what is queued, then the loss if any, until the last
    /// [`Lossy`] is gone. Failed writes (a stderr that was closed) are not retried.
    fn write_to<S: Write>(&self, mut sink: S) {
        loop {
            match self.next_work() {
                Work::Bytes(chunks) => {
                    let written: usize = chunks.iter().map(Vec::len).sum();
                    for chunk in chunks {
                        let _ = sink.write_all(&chunk);
                    }
                    let _ = sink.flush();
                    let mut state = self.lock();
                    state.held = state.held.saturating_sub(written);
                }
                Work::Notice(dropped) => {
                    let notice = format!(
                        "signoff proxy: {dropped} bytes of stderr dropped: nobody was reading it\n"
                    );
                    let _ = sink.write_all(notice.as_bytes());
                    let _ = sink.flush();
                }
                Work::Stop => return,
            }
        }
    }

    /// Waits for something to write: what is queued first, then the loss (reported
    /// only once the queue is empty, which is when the sink caught up).
    fn next_work(&self) -> Work {
        let mut state = self.lock();
        loop {
            if !state.queue.is_empty() {
                state.busy = true;
                return Work::Bytes(std::mem::take(&mut state.queue));
            }
            if state.dropped > 0 {
                state.busy = true;
                return Work::Notice(std::mem::take(&mut state.dropped));
            }
            state.busy = false;
            self.idle.notify_all();
            if state.closed {
                state.stopped = true;
                return Work::Stop;
            }
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Write for &Lossy {
    /// Always takes all of `bytes`, queued or dropped.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.send(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lossy {
    type Writer = &'a Lossy;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

static STDERR: OnceLock<Lossy> = OnceLock::new();

/// The process's stderr as a [`Lossy`] with a [`BUDGET`], started on first use.
pub fn stderr() -> &'static Lossy {
    STDERR.get_or_init(|| Lossy::new(io::stderr(), BUDGET))
}

/// Waits up to `within` for what was queued for stderr to be written, if anything
/// was ever queued (see [`Lossy::settle`]).
pub fn settle_stderr(within: Duration) {
    if let Some(stderr) = STDERR.get() {
        stderr.settle(within);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A sink whose writes wait until it is opened; it keeps what it was given.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<(Mutex<bool>, Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Gated {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(self.got.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_to_a_blocked_sink_return_at_once_and_what_did_not_fit_is_reported_once_it_drains() {
        let sink = Gated::default();
        let lossy = Lossy::new(sink.clone(), 1000);
        // Ten lines of 200 bytes against a budget of 1000: five are held, five dropped.
        let (done, wrote) = mpsc::channel();
        let writer = lossy.clone();
        std::thread::spawn(move || {
            for n in 0..10 {
                let line = format!("{n}{}", "x".repeat(198));
                assert_eq!(
                    (&writer).write(format!("{line}\n").as_bytes()).unwrap(),
                    200
                );
            }
            done.send(()).unwrap();
        });
        wrote
            .recv_timeout(Duration::from_secs(5))
            .expect("the writes returned though the sink blocks");
        assert!(
            !lossy.settle(Duration::from_millis(50)),
            "nothing written yet"
        );
        assert_eq!(sink.text(), "");

        sink.open();
        assert!(lossy.settle(Duration::from_secs(5)), "the sink caught up");
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        for (n, line) in lines[..5].iter().enumerate() {
            assert!(
                line.starts_with(&n.to_string()) && line.len() == 199,
                "{line}"
            );
        }
        assert_eq!(
            lines[5],
            "signoff proxy: 1000 bytes of stderr dropped: nobody was reading it"
        );

        // Caught up, it holds the whole budget again, and reports no loss twice.
        lossy.line(&"y".repeat(999));
        assert!(lossy.settle(Duration::from_secs(5)));
        assert_eq!(sink.text().lines().count(), 7);
        assert!(sink.text().ends_with(&format!("{}\n", "y".repeat(999))));
    }

    #[test]
    fn the_thread_writes_what_is_left_and_ends_when_the_last_writer_goes() {
        let sink = Gated::default();
        sink.open();
        let lossy = Lossy::new(sink.clone(), BUDGET);
        lossy.line("last words");
        let shared = Arc::clone(&lossy.handle.shared);
        drop(lossy);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !shared.lock().stopped {
            assert!(Instant::now() < deadline, "the thread ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "last words\n");
    }
}
