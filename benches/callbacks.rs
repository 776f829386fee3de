//! The callback path's cost (criterion): `cargo bench --bench callbacks`. One callback
//! is its JSON body (the approval as it is) and its Standard Webhooks signature
//! (Ed25519 over "{id}.{timestamp}.{body}"). Target: ≥ 20,000 callbacks/s on one core,
//! i.e. ≤ 50 µs each. Criterion measures wall time, which on a shared machine counts
//! other processes' turns too; the bench also prints callbacks per second of this
//! thread's own CPU time (Linux), the one-core figure whatever else runs.

use std::hint::black_box;

use chrono::TimeZone;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use signoff::approval::machine;
use signoff::approval::{ApprovalId, NewApproval, Status};
use signoff::outbox::callback;
use signoff::policy::{Call, Policy};
use signoff::signing::Signer;

/// Where the benched callbacks go.
const URL: &str = "https://hooks.example.com/signoff";

fn callbacks(c: &mut Criterion) {
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap();
    let parameters = json!({"customer_ids": ["c1", "c2"], "reason": "purge test accounts"});
    let mut request = NewApproval::new("delete_customer_records", parameters.clone());
    request.summary = Some("Delete 2 customer records".into());
    request.callback_url = Some(URL.into());
    let policy = Policy::builtin();
    let call = Call {
        tool: "delete_customer_records",
        server: None,
        params: &parameters,
        annotations: None,
    };
    let class = policy.classify_call(&call, None);
    let approval = machine::open(ApprovalId::new(), request, &class, now).next;
    let signer = Signer::generate();

    let mut group = c.benchmark_group("callback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("body_and_signature", |b| {
        b.iter(|| {
            let body = callback::body(black_box(&approval), URL, "approved", now);
            let id = callback::message_id(approval.id, Status::Approved);
            callback::sign(&signer, id, now.timestamp(), &body)
        })
    });
    let body = callback::body(&approval, URL, "approved", now);
    group.bench_function("signature_only", |b| {
        b.iter(|| {
            let id = callback::message_id(approval.id, Status::Approved);
            callback::sign(&signer, id, now.timestamp(), black_box(&body))
        })
    });
    group.finish();
}

/// This thread's CPU time so far (user + system), from `/proc/thread-self/stat`.
fn thread_cpu() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}

/// Callbacks (body and signature) per second of one core's CPU time.
fn per_cpu_second(c: &mut Criterion) {
    let _ = c;
    let now = chrono::Utc::now();
    let parameters = json!({"customer_ids": ["c1", "c2"], "reason": "purge test accounts"});
    let mut request = NewApproval::new("delete_customer_records", parameters.clone());
    request.callback_url = Some(URL.into());
    let call = Call {
        tool: "delete_customer_records",
        server: None,
        params: &parameters,
        annotations: None,
    };
    let class = Policy::builtin().classify_call(&call, None);
    let approval = machine::open(ApprovalId::new(), request, &class, now).next;
    let signer = Signer::generate();
    let Some(start) = thread_cpu() else {
        return;
    };
    let mut done = 0u64;
    let used = loop {
        for _ in 0..1000 {
            let body = callback::body(&approval, URL, "approved", now);
            let id = callback::message_id(approval.id, Status::Approved);
            black_box(callback::sign(&signer, id, now.timestamp(), &body));
        }
        done += 1000;
        let used = thread_cpu().unwrap_or(start) - start;
        if used >= std::time::Duration::from_secs(2) {
            break used;
        }
    };
    println!(
        "callback/body_and_signature: {:.0} callbacks per CPU-second on one core ({done} in {used:?} of thread CPU time)",
        done as f64 / used.as_secs_f64()
    );
}

criterion_group!(benches, callbacks, per_cpu_second);
criterion_main!(benches);
