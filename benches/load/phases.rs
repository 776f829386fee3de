//! Steps 1–3: create, get and execute over the HTTP API.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;

use crate::cli::Settings;
use crate::client::{AUTO_TOOL, Api, PENDING_TOOL, parameters};
use crate::cpu::CpuMeter;
use crate::drive::{Load, Phase, drive};
use crate::report::Stats;
use crate::server::Server;

/// Step 1. Returns the stats and the ids created (all pending).
pub async fn measure_create(api: &Api, settings: Settings) -> Result<(Phase<String>, Vec<String>)> {
    let batch = rand::random::<u64>();
    let phase = drive(api, Load::timed(settings), move |api, i| async move {
        api.create(PENDING_TOOL, parameters(batch, i), "pending")
            .await
    })
    .await;
    phase.stats.print(api.label, "create");
    ensure!(phase.stats.requests > 0, "no create succeeded");
    let ids = phase.outputs.iter().map(|(_, id)| id.clone()).collect();
    Ok((phase, ids))
}

/// Step 2: gets of random ids from `ids`.
pub async fn measure_get(api: &Api, ids: Arc<Vec<String>>, settings: Settings) -> Result<Stats> {
    let phase = gets(api, ids, settings).await;
    phase.stats.print(api.label, "get");
    Ok(phase.stats)
}

pub async fn gets(api: &Api, ids: Arc<Vec<String>>, settings: Settings) -> Phase<()> {
    drive(api, Load::timed(settings), move |api, _| {
        let id = ids[rand::random_range(0..ids.len())].clone();
        async move { api.get(&id).await }
    })
    .await
}

/// Step 3: creates about one phase's worth of auto-approved approvals (sized from the
/// create rate), executes each once, then checks that executing one again is refused.
pub async fn measure_execute(
    api: &Api,
    settings: Settings,
    create_rate: f64,
    server: &Server,
) -> Result<Stats> {
    let wanted = (create_rate * settings.phase.as_secs_f64()) as usize;
    let wanted = wanted.clamp(settings.clients * 10, 300_000);
    let batch = rand::random::<u64>();
    let approved = drive(
        api,
        Load::counted(settings, wanted),
        move |api, i| async move {
            api.create(AUTO_TOOL, parameters(batch, i), "approved")
                .await
        },
    )
    .await;
    ensure!(
        approved.stats.failures == 0,
        "creating auto-approved approvals failed: {:?}",
        approved.stats.first_failure
    );
    let approved = Arc::new(approved.outputs);
    let targets = approved.clone();
    let cpu = CpuMeter::start(server)?;
    let phase = drive(
        api,
        Load {
            count: approved.len(),
            ..Load::timed(settings)
        },
        move |api, slot| {
            let (i, id) = targets[slot].clone();
            async move {
                let (status, state) = api.execute(&id, parameters(batch, i)).await?;
                ensure!(
                    status == StatusCode::OK && state == "executed",
                    "execute answered {status} ({state})"
                );
                Ok(())
            }
        },
    )
    .await;
    phase.stats.print(api.label, "execute");
    cpu.print(api.label, "execute")?;
    ensure!(
        phase.stats.failures == 0,
        "{} executes did not answer 200: {:?}",
        phase.stats.failures,
        phase.stats.first_failure
    );
    check_single_use(api, &approved, batch).await?;
    Ok(phase.stats)
}

/// A second execute of an executed approval must be 409 and change nothing.
async fn check_single_use(api: &Api, approved: &[(usize, String)], batch: u64) -> Result<()> {
    let (i, id) = approved.first().context("no approved approval")?;
    let (status, state) = api.execute(id, parameters(batch, *i)).await?;
    ensure!(
        status == StatusCode::CONFLICT && state == "executed",
        "second execute of {id} answered {status} ({state}), expected 409 (executed)"
    );
    println!(
        "[{}] execute: every answer 200; second execute of one id: 409",
        api.label
    );
    Ok(())
}
