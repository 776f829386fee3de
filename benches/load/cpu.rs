//! CPU accounting from `/proc`: how much of the machine the server, this driver and
//! everything else used over a phase, how much the hypervisor took from this virtual
//! machine (steal), and the server's busiest threads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::server::Server;

/// CPU time used by the server and by this driver over one phase: on a small machine
/// it shows which side the throughput is bound by.
pub struct CpuMeter {
    server_pid: u32,
    server: Duration,
    driver: Duration,
    machine: MachineTime,
    threads: HashMap<String, Duration>,
    started: Instant,
}

impl CpuMeter {
    pub fn start(server: &Server) -> Result<CpuMeter> {
        Ok(CpuMeter {
            server_pid: server.pid(),
            server: cpu_time(&server.pid().to_string())?,
            driver: cpu_time("self")?,
            machine: machine_time()?,
            threads: thread_times(server.pid())?
                .into_iter()
                .map(|(tid, (_, time))| (tid, time))
                .collect(),
            started: Instant::now(),
        })
    }

    pub fn print(&self, backend: &str, what: &str) -> Result<()> {
        let wall = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let server = cpu_time(&self.server_pid.to_string())?.saturating_sub(self.server);
        let driver = cpu_time("self")?.saturating_sub(self.driver);
        let machine = machine_time()?;
        let busy = machine.busy.saturating_sub(self.machine.busy);
        let stolen = machine.stolen.saturating_sub(self.machine.stolen);
        println!(
            "[{backend}] {what}: CPU used: server {:.2} cores, load driver {:.2} cores, \
             whole machine {:.2} of {} cores (the rest: database, other processes); \
             stolen by the hypervisor {:.2} cores",
            server.as_secs_f64() / wall,
            driver.as_secs_f64() / wall,
            busy.as_secs_f64() / wall,
            cpus(),
            stolen.as_secs_f64() / wall,
        );
        println!(
            "[{backend}] {what}: busiest server threads: {}",
            self.busiest_threads(wall)?
        );
        Ok(())
    }

    /// The three server threads that used the most CPU since `start`, in cores.
    pub fn busiest_threads(&self, wall: f64) -> Result<String> {
        let mut used: Vec<(String, Duration)> = thread_times(self.server_pid)?
            .into_iter()
            .map(|(tid, (name, time))| {
                let before = self.threads.get(&tid).copied().unwrap_or_default();
                (name, time.saturating_sub(before))
            })
            .collect();
        used.sort_by_key(|(_, time)| std::cmp::Reverse(*time));
        let shown: Vec<String> = used
            .iter()
            .take(3)
            .map(|(name, time)| format!("{name} {:.2}", time.as_secs_f64() / wall))
            .collect();
        Ok(shown.join(", "))
    }
}

/// Every thread of `pid`: thread id → (name, CPU time).
fn thread_times(pid: u32) -> Result<HashMap<String, (String, Duration)>> {
    let mut threads = HashMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("list /proc/{pid}/task"))?;
    for task in tasks {
        let tid = task.context("read /proc/<pid>/task")?.file_name();
        let tid = tid.to_string_lossy().into_owned();
        let path = format!("{pid}/task/{tid}");
        // A thread may end between listing and reading: skip it.
        let (Ok(name), Ok(time)) = (
            std::fs::read_to_string(format!("/proc/{path}/comm")),
            cpu_time(&path),
        ) else {
            continue;
        };
        threads.insert(tid, (name.trim().to_owned(), time));
    }
    Ok(threads)
}

/// `/proc` reports CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: u64 = 100;

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The whole machine's CPU time so far, all cores.
#[derive(Clone, Copy)]
struct MachineTime {
    /// Used by its processes and kernel (idle, iowait and steal excluded).
    busy: Duration,
    /// Taken by the hypervisor: a vCPU had work and was not running it.
    stolen: Duration,
}

fn machine_time() -> Result<MachineTime> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("no cpu line in /proc/stat")?
        .split_whitespace()
        .map(|field| field.parse().context("malformed /proc/stat"))
        .collect::<Result<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    let busy = ticks
        .iter()
        .take(7)
        .enumerate()
        .filter(|(index, _)| *index != 3 && *index != 4)
        .map(|(_, ticks)| ticks)
        .sum();
    let stolen = ticks.get(7).copied().unwrap_or(0);
    Ok(MachineTime {
        busy: ticks_to_duration(busy),
        stolen: ticks_to_duration(stolen),
    })
}

/// User + system CPU time of `/proc/<pid>` (or `self`, or `<pid>/task/<tid>`), from
/// its `stat` file.
fn cpu_time(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields 14 and 15 follow its ')'.
    let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("malformed /proc/{pid}/stat"))
    };
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let total = ticks(11)? + ticks(12)?;
    Ok(ticks_to_duration(total))
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
