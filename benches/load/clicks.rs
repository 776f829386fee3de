//! Step 6: signed Slack clicks. `signoff serve` runs with Slack on, pointed at a fake
//! Slack Web API in this process; the bench pre-creates pending approvals, then
//! `--clients` tasks each `POST /slack/interactions` a signed `block_actions` Approve
//! click, one per approval, and time the ack. Afterwards every clicked approval must
//! read `approved`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;

use crate::cli::Settings;
use crate::client::{Api, PENDING_TOOL, parameters};
use crate::cpu::CpuMeter;
use crate::drive::{Load, drive};
use crate::fake_slack::FakeSlack;
use crate::report::{CLICKS_RATE_TARGET, Stats, count};
use crate::server::{Server, SlackEnv, create_token};
use crate::slack::{SlackMessage, click_on_message, signed_post};
use crate::stages::Snapshot;

const SIGNING_SECRET: &str = "bench-signing-secret-0123456789";
const CHANNEL: &str = "C0BENCH";
/// Anyone may approve; one approval decides.
const CLICKS_POLICY: &str =
    "[defaults]\nchannel = \"C0BENCH\"\nexpires_after = \"1h\"\nmax_pending = 0\n";
/// Approvals created beyond the target's worth, so that a server faster than the target
/// still clicks for (nearly) the whole phase.
const MARGIN: f64 = 1.5;
/// The clicks' route, whose server-side time `/metrics` gives.
const CLICK_ROUTE: &str = "/slack/interactions";
/// How long the server's CPU use is watched with no requests, between set-up and clicks.
const IDLE_PROBE: Duration = Duration::from_secs(1);

/// What step 6 measured.
pub struct ClicksReport {
    /// Ack times of the clicks.
    pub stats: Stats,
    pub clients: usize,
    pub seconds: u64,
    /// Clicked approvals read back, and how many of them were `approved`.
    pub checked: usize,
    pub approved: usize,
}

pub async fn measure(
    backend: &'static str,
    url: String,
    settings: Settings,
) -> Result<ClicksReport> {
    let fake = FakeSlack::start().await;
    let workdir = tempfile::tempdir().context("create a temp dir for the policy")?;
    let policy = workdir.path().join("bench-clicks-policy.toml");
    std::fs::write(&policy, CLICKS_POLICY).context("write the clicks policy")?;
    let token = create_token(&url).await?;
    let slack = SlackEnv {
        bot_token: "xoxb-bench",
        signing_secret: SIGNING_SECRET,
        api_url: &fake.url,
        app_token: None,
    };
    let server = Server::start(&url, Some(&policy), Some(slack)).await?;
    let api = Api::new(backend, server.base_url(), token);

    let ids = Arc::new(create_pending(&api, settings).await?);
    // What the server does on its own with the approvals queued for posting (the outbox
    // posts to one channel at most once a second), before any click.
    let cpu = CpuMeter::start(&server)?;
    tokio::time::sleep(IDLE_PROBE).await;
    cpu.print(backend, "idle before the clicks")?;
    let cpu = CpuMeter::start(&server)?;
    let stages = Snapshot::scrape(&api.http, &api.base, CLICK_ROUTE).await?;
    let targets = ids.clone();
    let phase = drive(
        &api,
        Load {
            count: ids.len(),
            ..Load::timed(settings)
        },
        move |api, i| {
            let id = targets[i].clone();
            async move { click(&api, &id, i).await }
        },
    )
    .await;
    phase.stats.print(backend, "signed clicks");
    cpu.print(backend, "signed clicks")?;
    Snapshot::scrape(&api.http, &api.base, CLICK_ROUTE)
        .await?
        .print_since(&stages, backend, "signed clicks");
    ensure!(phase.stats.requests > 0, "no click was acknowledged");
    let slack_during = fake.call_counts();

    let clicked: Arc<Vec<String>> = Arc::new(
        phase
            .outputs
            .iter()
            .map(|(i, ())| ids[*i].clone())
            .collect(),
    );
    let (checked, approved) = check_approved(&api, clicked, settings).await?;
    println!(
        "[{backend}] signed clicks: {} of {} acknowledged clicks left their approval approved",
        count(approved),
        count(checked)
    );
    println!(
        "[{backend}] fake Slack calls by the end of the clicks: {}",
        calls_line(&slack_during)
    );
    println!(
        "[{backend}] fake Slack calls after the check:         {}",
        calls_line(&fake.call_counts())
    );
    drop(server);
    Ok(ClicksReport {
        stats: phase.stats,
        clients: settings.clients,
        seconds: settings.phase.as_secs(),
        checked,
        approved,
    })
}

/// About `MARGIN` × the target's worth of clicks in one phase, all pending.
async fn create_pending(api: &Api, settings: Settings) -> Result<Vec<String>> {
    let wanted = CLICKS_RATE_TARGET * settings.phase.as_secs_f64() * MARGIN;
    let wanted = (wanted as usize).max(settings.clients * 10);
    let batch = rand::random::<u64>();
    let created = drive(
        api,
        Load::counted(settings, wanted),
        move |api, i| async move {
            api.create(PENDING_TOOL, parameters(batch, i), "pending")
                .await
        },
    )
    .await;
    created.stats.print(api.label, "clicks set-up: create");
    ensure!(
        created.stats.failures == 0,
        "creating approvals to click failed: {:?}",
        created.stats.first_failure
    );
    Ok(created.outputs.into_iter().map(|(_, id)| id).collect())
}

/// One signed Approve click on approval `id`, by user `U0BENCH<i>`; 200 or an error.
/// The click carries its message as Slack sends it, with the metadata signoff gave it
/// (which names the approval): posts are paced to one a second per channel, so during
/// the phase most approvals would otherwise have no message to click yet.
async fn click(api: &Api, id: &str, i: usize) -> Result<()> {
    let message = SlackMessage::signoffs(id, CHANNEL);
    let payload = click_on_message(id, &format!("U0BENCH{i}"), "approve", &message);
    let answer = signed_post(&api.http, &api.base, SIGNING_SECRET, &payload)
        .send()
        .await?;
    let status = answer.status();
    answer.bytes().await?;
    ensure!(status == StatusCode::OK, "click answered {status}");
    Ok(())
}

/// Reads every clicked approval back: (read, approved).
async fn check_approved(
    api: &Api,
    ids: Arc<Vec<String>>,
    settings: Settings,
) -> Result<(usize, usize)> {
    let targets = ids.clone();
    let read = drive(api, Load::counted(settings, ids.len()), move |api, i| {
        let id = targets[i].clone();
        async move { api.status(&id).await }
    })
    .await;
    ensure!(
        read.stats.failures == 0,
        "reading clicked approvals back failed: {:?}",
        read.stats.first_failure
    );
    let approved = read
        .outputs
        .iter()
        .filter(|(_, status)| status == "approved")
        .count();
    if let Some((i, status)) = read.outputs.iter().find(|(_, status)| status != "approved") {
        println!(
            "[{}] signed clicks: for example {} is {status:?}",
            api.label, ids[*i]
        );
    }
    Ok((read.outputs.len(), approved))
}

fn calls_line(calls: &std::collections::BTreeMap<String, usize>) -> String {
    let shown: Vec<String> = calls
        .iter()
        .map(|(method, n)| format!("{method} {}", count(*n)))
        .collect();
    shown.join(", ")
}
