#!/usr/bin/env bash
# signoff side by side with the seed design (../shared/perf): the peer, then signoff on
# SQLite, then signoff on PostgreSQL, ROUNDS times (default 2) one after the other, and
# a table of each pair's ratios. From signoff's root, after `cargo build --release`:
#   benches/seed/run.sh
# The peer runs the harness's four scenarios in one go. signoff runs them in two starts
# of the harness per store (each on a fresh database): intake and status gets as
# shipped (posts paced at one a second per channel, as Slack asks), then the clicks
# alone with posts unpaced (the fake Slack does not limit) and MSG_WAIT long enough for
# every one of the driver's requests to be posted, since signoff counts a click only
# from the request's own message. See benches/seed/signoff.sh for the rest.
# Results: $BENCH_TMP/side-by-side/<round>-<side>.json and the table on stdout, then
# where the CPU went in each measured run (benches/seed/cpu.py, sampling /proc twice a
# second for about 1.5 % of a core; CPU=0 leaves it out).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
perf="${SIGNOFF_PERF_DIR:-$root/../shared/perf}"
export BENCH_TMP="${BENCH_TMP:-/tmp/peerbench}"
out="$BENCH_TMP/side-by-side"
mkdir -p "$out"
[ -x "$root/target/release/signoff" ] || { echo "run.sh: build first: cargo build --release" >&2; exit 1; }
export SIGNOFF_BIN="$root/benches/seed/signoff.sh"
at() { date -u +%H:%M:%S; }
if [ "${CPU:-1}" != 0 ]; then
  python3 "$root/benches/seed/cpu.py" sample "$out/cpu.jsonl" &
  sampler=$!
  trap 'kill $sampler 2>/dev/null || true' EXIT
fi
# The harness stops signoff with SIGTERM and does not wait: let it finish before the next
# side starts, so no side shares the machine with the one before.
settle() {
  for _ in $(seq 1 300); do
    pgrep -f "$root/target/release/signoff serve" >/dev/null || return 0
    sleep 0.1
  done
  echo "run.sh: signoff still running 30 s after the harness stopped it" >&2
  return 1
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo "== round $round: seed design ($(at) UTC)" >&2
  OUT="$out/$round-peer.json" "$perf/run-peer-bench.sh" >&2
  for store in sqlite postgres; do
    echo "== round $round: signoff on $store, intake and gets ($(at) UTC)" >&2
    (cd "$root" && STORE=$store OUT="$out/$round-$store-paced.json" \
      SCENARIOS="intake_slack0ms intake_slack150ms status_get" "$perf/run-signoff-bench.sh") >&2
    settle
    echo "== round $round: signoff on $store, clicks ($(at) UTC)" >&2
    (cd "$root" && STORE=$store OUT="$out/$round-$store-clicks.json" SCENARIOS=interactions \
      SIGNOFF_SLACK_POST_INTERVAL=0s MSG_WAIT="${MSG_WAIT:-180}" "$perf/run-signoff-bench.sh") >&2
    settle
  done
done
python3 "$root/benches/seed/table.py" "$out" "${ROUNDS:-2}"
if [ -n "${sampler:-}" ]; then
  kill "$sampler" && wait "$sampler" || true
  echo
  python3 "$root/benches/seed/cpu.py" report "$out/cpu.jsonl" "$out"
fi
