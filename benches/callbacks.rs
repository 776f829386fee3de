//! The callback path's cost (criterion): `cargo bench --bench callbacks`. One callback
//! is its JSON body (the approval as it is) and its Standard Webhooks signature
//! (Ed25519 over "{id}.{timestamp}.{body}"). Target: ≥ 20,000 callbacks/s on one core,
//! i.e. ≤ 50 µs each.

use std::hint::black_box;

use chrono::TimeZone;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use signoff::approval::machine;
use signoff::approval::{ApprovalId, NewApproval, Status};
use signoff::outbox::callback;
use signoff::policy::{Call, Policy};
use signoff::signing::Signer;

fn callbacks(c: &mut Criterion) {
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap();
    let parameters = json!({"customer_ids": ["c1", "c2"], "reason": "purge test accounts"});
    let mut request = NewApproval::new("delete_customer_records", parameters.clone());
    request.summary = Some("Delete 2 customer records".into());
    request.callback_url = Some("https://hooks.example.com/signoff".into());
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
            let body = callback::body(black_box(&approval), "approved", now);
            let id = callback::message_id(approval.id, Status::Approved);
            callback::sign(&signer, id, now.timestamp(), &body)
        })
    });
    let body = callback::body(&approval, "approved", now);
    group.bench_function("signature_only", |b| {
        b.iter(|| {
            let id = callback::message_id(approval.id, Status::Approved);
            callback::sign(&signer, id, now.timestamp(), black_box(&body))
        })
    });
    group.finish();
}

criterion_group!(benches, callbacks);
criterion_main!(benches);
