//! Slack signature verification cost (criterion): `cargo bench --bench verify`.
//! Target: < 5 µs per request, for a typical ~1 KiB interaction body and for Slack's
//! published slash-command example.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use signoff::slack::verify::verify_at;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TIMESTAMP: &str = "1531420618";
const EXAMPLE_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const EXAMPLE_SIGNATURE: &str =
    "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{TIMESTAMP}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn verification(c: &mut Criterion) {
    let now: i64 = TIMESTAMP.parse().expect("numeric timestamp");
    let mut group = c.benchmark_group("slack_verify");

    group.throughput(Throughput::Bytes(EXAMPLE_BODY.len() as u64));
    group.bench_function("slash_command_example", |b| {
        b.iter(|| {
            verify_at(
                black_box(SECRET.as_bytes()),
                black_box(TIMESTAMP),
                black_box(EXAMPLE_BODY.as_bytes()),
                black_box(EXAMPLE_SIGNATURE),
                now,
            )
            .expect("Slack's example verifies")
        })
    });

    // A block_actions click is about 1-2 KiB once form-encoded.
    let click = format!(
        "payload={}",
        "%7B%22type%22%3A%22block_actions%22".repeat(40)
    );
    let signature = sign(click.as_bytes());
    group.throughput(Throughput::Bytes(click.len() as u64));
    group.bench_function("interaction_1_5kib", |b| {
        b.iter(|| {
            verify_at(
                black_box(SECRET.as_bytes()),
                black_box(TIMESTAMP),
                black_box(click.as_bytes()),
                black_box(&signature),
                now,
            )
            .expect("verifies")
        })
    });

    let forged = format!("v0={}", "0".repeat(64));
    group.bench_function("forged_signature_rejected", |b| {
        b.iter(|| {
            verify_at(
                black_box(SECRET.as_bytes()),
                black_box(TIMESTAMP),
                black_box(click.as_bytes()),
                black_box(&forged),
                now,
            )
            .expect_err("forged")
        })
    });
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
