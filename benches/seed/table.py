"""The side-by-side table of benches/seed/run.sh: per scenario and round, the seed
design's figures, then each signoff store's with its ratios to the peer (rate ×, p99 ×)."""
import json
import sys

out, rounds = sys.argv[1], int(sys.argv[2])


def load(round_, side):
    """The scenarios of one side in one round; signoff's come from two files."""
    parts = ["peer"] if side == "peer" else [f"{side}-paced", f"{side}-clicks"]
    rows = {}
    for part in parts:
        with open(f"{out}/{round_}-{part}.json") as f:
            rows.update({row["scenario"]: row for row in json.load(f)["scenarios"]})
    return rows


def cell(row):
    if row is None:
        return "-"
    errors = f", {row['errors']} errors" if row.get("errors") else ""
    verified = row.get("verified")
    if verified:
        errors += f", {verified['approved']}/{verified['checked']} checked approved"
    return f"{row['req_per_s']:,.0f}/s p99 {row['p99_ms']:.1f} ms{errors}"


def ratio(row, peer):
    if not row or not peer or not peer.get("req_per_s") or not peer.get("p99_ms"):
        return ""
    return f" ({row['req_per_s'] / peer['req_per_s']:.2f}× rate, p99 {row['p99_ms'] / peer['p99_ms']:.2f}×)"


print("| scenario | round | seed design | signoff, SQLite | signoff, PostgreSQL |")
print("|---|---|---|---|---|")
for round_ in range(1, rounds + 1):
    peer, sqlite, postgres = (load(round_, side) for side in ("peer", "sqlite", "postgres"))
    for scenario in peer:
        p, s, g = peer.get(scenario), sqlite.get(scenario), postgres.get(scenario)
        print(f"| {scenario} | {round_} | {cell(p)} | {cell(s)}{ratio(s, p)} | {cell(g)}{ratio(g, p)} |")
