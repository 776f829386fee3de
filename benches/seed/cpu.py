"""Where the machine's CPU goes during each measured scenario of benches/seed/run.sh.

    python3 benches/seed/cpu.py sample FILE      # until SIGTERM: a timeline in FILE
    python3 benches/seed/cpu.py report FILE DIR  # per scenario, with DIR's results

`sample` reads /proc twice a second and keeps, per kind of process, the CPU time used
so far (user + system, summed over every process of that kind ever seen, so a process
that exits keeps what it used): the server under test (signoff or the seed design),
PostgreSQL (every backend and helper), the fake Slack, the load driver (oha, the click
driver) and the rest of the machine; and, apart, the CPU time the hypervisor took from
this virtual machine (/proc/stat's steal: time a vCPU had work but was not running it,
counted in none of the processes). It also notes each measured driver run: an `oha`
with `-w` (bench.sh's warm-up runs have none) and each run of clickload.js, with which
server was up and, for intake, the fake Slack's latency at that moment.

`report` joins those runs, in order, with the harness's result files in DIR (as run.sh
writes them: ROUND-peer.json, ROUND-STORE-paced.json, ROUND-STORE-clicks.json) and
prints, per scenario and side, the cores each kind used, the cores stolen, and the CPU
time each kind used per request. A click run's measured window is the last `elapsed_s` seconds before its
driver exited (it first creates its approvals and waits for their messages).
"""
import json
import os
import signal
import sys
import time
import urllib.request

KINDS = ("server", "postgres", "fake_slack", "driver", "rest")
TICK = os.sysconf("SC_CLK_TCK")
FAKE_SLACK = os.environ.get("FAKE_SLACK", "http://127.0.0.1:9911")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None


def kind_of(pid, argv):
    """The kind of a process, and what a measured driver run or a server is."""
    if not argv:
        return None, None
    exe = os.path.basename(argv[0])
    joined = " ".join(argv)
    if exe == "postgres" or joined.startswith("postgres:"):
        return "postgres", None
    if exe == "oha":
        if "-w" not in argv:
            return "driver", None
        method = argv[argv.index("-m") + 1] if "-m" in argv else "GET"
        return "driver", {"driver": "oha", "method": method}
    if exe == "node" and any(a.endswith("clickload.js") for a in argv):
        return "driver", {"driver": "clicks"}
    if exe == "node" and any(a.endswith("fake-slack/server.js") for a in argv):
        return "fake_slack", None
    if "serve" in argv and any(os.path.basename(a) == "signoff" for a in argv[:1]):
        url = environ(pid).get("DATABASE_URL", "")
        store = "postgres" if url.startswith("postgres") else "sqlite"
        return "server", {"server": store}
    if exe == "node" and "server.js" in argv and cwd(pid).endswith("seed-node"):
        return "server", {"server": "peer"}
    return None, None


def environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            pairs = (e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            return {k.decode(): v.decode(errors="replace") for k, v in pairs}
    except OSError:
        return {}


def cwd(pid):
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def machine_time():
    """CPU seconds the machine's processes and kernel used so far, and those stolen."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    idle, steal = values[3] + values[4], values[7]
    return (sum(values[:7]) - idle) / TICK, steal / TICK


def fake_slack_config():
    try:
        with urllib.request.urlopen(f"{FAKE_SLACK}/stats", timeout=1) as r:
            return json.load(r).get("config", {})
    except (OSError, ValueError):
        return {}


def sample(path):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    known = {}  # pid -> (kind, info, first seen cpu, last seen cpu), None if of no kind
    # pid -> its command line, for those of no kind: one that execs another program
    # (the seed design's start.sh ends in `exec node server.js`) is looked at again.
    unclassified = {}
    servers = {}  # live server pid -> "peer", "sqlite" or "postgres"
    runs = {}  # driver pid -> run record
    carried = {}  # kind -> CPU of its processes that have exited
    with open(path, "w") as out:
        busy0, steal0 = machine_time()
        while not stop:
            now = time.time()
            live = set()
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                pid = int(name)
                live.add(pid)
                if pid in unclassified and cmdline(pid) != unclassified[pid]:
                    del known[pid], unclassified[pid]
                if pid not in known:
                    argv = cmdline(pid)
                    kind, info = kind_of(pid, argv)
                    used = cpu_seconds(pid) if kind else None
                    # A process already running when sampling began (or seen to become
                    # one of a kind) counts from now.
                    known[pid] = None if kind is None else [kind, info, used or 0.0, used or 0.0]
                    if kind is None:
                        unclassified[pid] = argv
                    if info and "server" in info:
                        servers[pid] = info["server"]
                    if info and "driver" in info:
                        run = dict(info, pid=pid, start=now)
                        if info["driver"] == "oha":
                            config = fake_slack_config()
                            run["delay_ms"] = config.get("delay_ms", 0)
                            run["rate_per_channel"] = config.get("rate_per_channel", 0)
                        runs[pid] = run
                entry = known[pid]
                if entry is not None:
                    used = cpu_seconds(pid)
                    if used is not None:
                        entry[3] = used
            for pid in [p for p in servers if p not in live]:
                del servers[pid]
            for run in runs.values():
                if "side" not in run and servers:
                    run["side"] = servers[max(servers)]
            for pid in [p for p in runs if p not in live]:
                run = runs.pop(pid)
                run["end"] = now
                out.write(json.dumps({"run": run}) + "\n")
            for pid in [p for p in unclassified if p not in live]:
                del unclassified[pid]
            for pid in [p for p in known if p not in live]:
                entry = known.pop(pid)
                if entry is not None:
                    carried[entry[0]] = carried.get(entry[0], 0.0) + entry[3] - entry[2]
            totals = dict(carried)
            for entry in known.values():
                if entry is not None:
                    totals[entry[0]] = totals.get(entry[0], 0.0) + entry[3] - entry[2]
            busy, steal = machine_time()
            totals["machine"], totals["steal"] = busy - busy0, steal - steal0
            out.write(json.dumps({"t": now, "cpu": totals}) + "\n")
            out.flush()
            time.sleep(0.5)



def scenario_of(run):
    if run["driver"] == "clicks":
        return "interactions"
    if run["method"] != "POST":
        return "status_get"
    if run.get("rate_per_channel"):
        return f"intake_rl{run['rate_per_channel']}"
    return f"intake_slack{run.get('delay_ms', 0)}ms"


def at(samples, t):
    """The cumulative CPU of the last sample at or before t."""
    best = samples[0]
    for s in samples:
        if s["t"] > t:
            break
        best = s
    return best


def report(path, results_dir):
    samples, runs = [], []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if "run" in record:
                runs.append(record["run"])
            else:
                samples.append(record)
    seen = {}  # (side, scenario) -> how many runs so far: its round
    print("| scenario | side | round | rate "
          "| cores: server / PostgreSQL / fake Slack / driver / rest "
          f"(busy of {os.cpu_count()}); stolen "
          "| CPU per request: server + PostgreSQL + fake Slack = total, driver |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        scenario, side = scenario_of(run), run.get("side") or "?"
        round_ = seen[(side, scenario)] = seen.get((side, scenario), 0) + 1
        row = result(results_dir, round_, side, scenario)
        end = run["end"]
        start = end - row["elapsed_s"] if row and run["driver"] == "clicks" else run["start"]
        a, b = at(samples, start + 0.5), at(samples, end - 0.5)
        wall = b["t"] - a["t"]
        if wall <= 0:
            continue
        used = lambda k: b["cpu"].get(k, 0.0) - a["cpu"].get(k, 0.0)
        cores = {k: used(k) / wall for k in KINDS[:-1] + ("machine", "steal")}
        cores["rest"] = cores["machine"] - sum(cores[k] for k in KINDS[:-1])
        shares = " / ".join(f"{cores[k]:.2f}" for k in KINDS)
        shares += f" ({cores['machine']:.2f}); {cores['steal']:.2f}"
        if row and row.get("req_per_s"):
            per = {k: cores[k] / row["req_per_s"] * 1e6 for k in KINDS}
            own = per["server"] + per["postgres"] + per["fake_slack"]
            cost = (f"{per['server']:.0f} + {per['postgres']:.0f} + {per['fake_slack']:.0f} = "
                    f"**{own:.0f} µs**, {per['driver']:.0f} µs")
            rate = f"{row['req_per_s']:,.0f}/s"
        else:
            cost, rate = "-", "-"
        print(f"| {scenario} | {side} | {round_} | {rate} | {shares} | {cost} |")


def result(results_dir, round_, side, scenario):
    parts = ["peer"] if side == "peer" else [f"{side}-paced", f"{side}-clicks"]
    for part in parts:
        try:
            with open(f"{results_dir}/{round_}-{part}.json") as f:
                for row in json.load(f)["scenarios"]:
                    if row["scenario"] == scenario:
                        return row
        except OSError:
            pass
    return None


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
