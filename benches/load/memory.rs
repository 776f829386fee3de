//! Step 5, server memory: fills the store with pending approvals and reads the server's
//! VmRSS and VmHWM along the way.

use std::sync::Arc;

use anyhow::Result;

use crate::cli::Settings;
use crate::client::{Api, PENDING_TOOL, parameters};
use crate::cpu::CpuMeter;
use crate::drive::{Load, drive};
use crate::phases::gets;
use crate::report::{count, mib};
use crate::server::{Memory, Server};

pub struct MemoryReport {
    pub at_start: Memory,
    pub filled: Memory,
    pub after_gets: Memory,
    pub pending: i64,
}

impl MemoryReport {
    pub fn worst_kb(&self) -> u64 {
        self.filled.rss_kb.max(self.after_gets.rss_kb)
    }
}

/// Fills the store up to `settings.pending` pending approvals, then runs a phase of
/// gets over all of them; reads the server's memory at each point.
pub async fn measure_memory(
    api: &Api,
    server: &Server,
    pending_ids: &mut Vec<String>,
    at_start: Memory,
    settings: Settings,
) -> Result<MemoryReport> {
    let missing = settings.pending.saturating_sub(pending_ids.len());
    if missing > 0 {
        let batch = rand::random::<u64>();
        let cpu = CpuMeter::start(server)?;
        let fill = drive(
            api,
            Load::counted(settings, missing),
            move |api, i| async move {
                api.create(PENDING_TOOL, parameters(batch, i), "pending")
                    .await
            },
        )
        .await;
        fill.stats.print(api.label, "fill");
        cpu.print(api.label, "fill")?;
        pending_ids.extend(fill.outputs.into_iter().map(|(_, id)| id));
    }
    let pending = api.pending_count().await?;
    let filled = server.memory()?;
    let cpu = CpuMeter::start(server)?;
    let burst = gets(api, Arc::new(std::mem::take(pending_ids)), settings).await;
    burst.stats.print(api.label, "gets over all pending");
    cpu.print(api.label, "gets over all pending")?;
    let after_gets = server.memory()?;
    let report = MemoryReport {
        at_start,
        filled,
        after_gets,
        pending,
    };
    println!(
        "[{}] memory: VmRSS {} at start, {} with {} pending, {} after gets; VmHWM (peak) {}",
        api.label,
        mib(at_start.rss_kb),
        mib(filled.rss_kb),
        count(pending.max(0) as usize),
        mib(after_gets.rss_kb),
        mib(after_gets.peak_kb),
    );
    Ok(report)
}
