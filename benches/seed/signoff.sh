#!/usr/bin/env bash
# `signoff` as ../shared/perf/run-signoff-bench.sh starts it (SIGNOFF_BIN=this file),
# adapted to three things that harness predates; each is said in docs/performance.md:
#   - its policy has no `max_pending`, and the default (20 waiting requests per token)
#     would refuse its floods from one token with 429: `max_pending = 0` is added;
#   - on PostgreSQL signoff needs SIGNOFF_SIGNING_KEY_FILE: one is made in BENCH_TMP;
#   - signoff posts at most one message a second per channel (Slack's limit), so the
#     click driver would find almost none of its 40,000 requests posted and click
#     templated buttons, which signoff refuses (a click counts only from the request's
#     own message): run.sh runs the click scenario on its own with
#     SIGNOFF_SLACK_POST_INTERVAL=0s and MSG_WAIT long enough for every post.
# The real binary is $SIGNOFF_REAL_BIN (default target/release/signoff).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${SIGNOFF_REAL_BIN:-$root/target/release/signoff}"
if [ "${1:-}" = serve ] && [ -n "${SIGNOFF_POLICY:-}" ] && ! grep -q '^max_pending' "$SIGNOFF_POLICY"; then
  sed -i 's/^\[defaults\]$/[defaults]\nmax_pending = 0/' "$SIGNOFF_POLICY"
fi
if [ -z "${SIGNOFF_SIGNING_KEY_FILE:-}" ] && [[ "${DATABASE_URL:-}" == postgres* ]]; then
  export SIGNOFF_SIGNING_KEY_FILE="${BENCH_TMP:-/tmp/peerbench}/signoff-signing.key"
  [ -f "$SIGNOFF_SIGNING_KEY_FILE" ] || "$bin" key generate "$SIGNOFF_SIGNING_KEY_FILE" >&2
fi
exec "$bin" "$@"
