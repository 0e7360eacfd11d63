#!/usr/bin/env python3
"""The scale benchmark (`make bench`): firedrill against `kubectl drain`, the
script a team would write, and an unthrottled parallel deleter (the limit of
this machine's API server and etcd), taking down the zone that holds a third
of a testbed cluster.

For each cluster size (nodes and pods grow together; the last is the main
one) it starts nothing new: one testbed grows from the smallest size to the
largest. At each size every contender runs REPS times, in turn; between runs
the zone is uncordoned and the cluster waits until every Deployment is fully
Ready again (the replacements that could not be placed while the zone was
down land back on it).

Output: a markdown table and JSON (bench-results.md, bench-results.json) and
an SVG chart of time against cluster size (bench-scale.svg), in --out.

Assumes nothing about speed; prints what it measured.

The operator is watched: if it exits while the bench runs (it lost its
leader Lease, say), the bench fails at once and prints the end of its log.
Each firedrill run reports the lease renew latency (p50/p99, from the
operator's `firedrill_lease_renew_seconds` histogram) and the leadership
losses during the run (`firedrill_leadership_losses_total`).
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTBED = os.path.join(REPO, "tests/testbed/testbed.sh")
KEY = "topology.kubernetes.io/zone"
ZONE = "zone-a"
NS = "bench"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, check=True, capture=True, env=None, timeout=None):
    r = subprocess.run(cmd, capture_output=capture, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def kubectl(*args, check=True, stdin=None, timeout=None):
    r = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=stdin, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {r.stderr}")
    return r.stdout


def kjson(*args):
    return json.loads(kubectl(*args, "-o", "json"))


def zone_nodes():
    return kubectl("get", "nodes", "-l", f"{KEY}={ZONE}", "-o", "name").split()


def pods_on_zone():
    """Pods (not being deleted) on the zone's nodes, counted from one list."""
    nodes = {n.split("/", 1)[1] for n in zone_nodes()}
    out = kubectl("get", "pods", "-A", "--no-headers", "-o", "custom-columns=NODE:.spec.nodeName,DEL:.metadata.deletionTimestamp")
    return sum(1 for line in out.splitlines() if line.split()[0] in nodes and line.split()[1] == "<none>")


def deployments_ready(expected):
    d = kjson("-n", NS, "get", "deployments")
    ready = sum(x.get("status", {}).get("readyReplicas", 0) or 0 for x in d["items"])
    return ready >= expected


def wait(what, check, timeout, every=2.0):
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - t0


def deployment_yaml(name, replicas):
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: {KEY}, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: {name}}}}}}}
      containers: [{{name: app, image: registry.invalid/app:1, resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}}}]
"""


def grow(nodes, pods, have_nodes, deployments):
    """Grow the testbed to `nodes` nodes and `pods` pods."""
    if nodes > have_nodes:
        log(f"adding {nodes - have_nodes} nodes")
        run([TESTBED, "nodes", str(nodes - have_nodes), str(have_nodes)], capture=False)
    per = pods // deployments
    docs = "---\n".join(deployment_yaml(f"app-{i:02d}", per) for i in range(deployments))
    t0 = time.monotonic()
    kubectl("apply", "--server-side", "-f", "-", stdin=docs)
    log(f"waiting for {per * deployments} pods to be Ready")
    wait("the pods", lambda: deployments_ready(per * deployments), 3600, every=5)
    log(f"{nodes} nodes, {per * deployments} pods Ready in {time.monotonic() - t0:.0f}s")
    return per * deployments


def settle(expected):
    """Back to the starting state: the zone schedulable, every pod Ready."""
    kubectl("uncordon", "-l", f"{KEY}={ZONE}")
    return wait("the cluster to recover", lambda: deployments_ready(expected), 1800, every=3)


def transition_time(exp, phase):
    for t in exp.get("status", {}).get("transitions", []):
        if t["phase"] == phase:
            return parse_rfc3339(t["time"])
    return None


def parse_rfc3339(s):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", s)
    base = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return base + (float(m.group(2)) if m.group(2) else 0.0)


class OperatorDied(SystemExit):
    pass


def _operator_died(signum, frame):
    raise OperatorDied(f"the operator exited while the bench ran ({Operator.died}); see its log above")


class Operator:
    # What ended the operator, once it ended on its own.
    died = None

    def __init__(self, binary, outdir, size, extra=()):
        self.port = free_port()
        self.log = open(os.path.join(outdir, f"operator-{size}.log"), "w")
        self.stopping = False
        self.proc = subprocess.Popen(
            [binary, "operator", f"--metrics-bind=127.0.0.1:{self.port}", "--log-format=json", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        # Whatever the bench waits for, it stops waiting when the operator exits.
        signal.signal(signal.SIGUSR1, _operator_died)
        threading.Thread(target=self._watch, daemon=True).start()
        wait("the operator's metrics", lambda: self.metrics() is not None, 60, every=0.5)

    def _watch(self):
        rc = self.proc.wait()
        if self.stopping:
            return
        Operator.died = f"exit status {rc}"
        log(f"the operator exited (status {rc}); the last lines of its log ({self.log.name}):")
        print(self.log_tail(), flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    def log_tail(self, lines=40):
        self.log.flush()
        with open(self.log.name) as f:
            return "".join(f.readlines()[-lines:])

    def histogram(self, name):
        """The cumulative buckets of histogram `name`: [(le, count)]."""
        buckets = []
        for line in (self.metrics() or "").splitlines():
            m = re.match(name + r'_bucket\{le="([^"]+)"\} (\S+)', line)
            if m:
                buckets.append((float(m.group(1)), float(m.group(2))))
        return buckets

    def counter(self, name):
        for line in (self.metrics() or "").splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def metrics(self):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        except Exception:
            return None

    def restore_seconds(self, name):
        """The restore's own duration, from the operator's log line for it
        (phase transitions are stamped when a reconcile starts, so the gap
        between Restoring and Completed does not time the restore)."""
        self.log.flush()
        with open(self.log.name) as f:
            for line in f:
                if '"zone restored"' in line and f'"experiment":"{name}"' in line:
                    return json.loads(line)["fields"]["restore_ms"] / 1000
        return None

    def requests(self):
        total = 0
        for line in (self.metrics() or "").splitlines():
            if line.startswith("firedrill_api_requests_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return None

    def stop(self):
        self.stopping = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def quantile(before, after, q):
    """Quantile `q` of what a histogram observed between two readings of its
    cumulative buckets, interpolated within the bucket (None: nothing observed)."""
    b = dict(before)
    delta = [(le, count - b.get(le, 0.0)) for le, count in after]
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    target = q * total
    lower, below = 0.0, 0.0
    for le, cum in delta:
        if cum >= target:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (target - below) / max(cum - below, 1e-9)
        lower, below = le, cum
    return lower


LEASE = "firedrill_lease_renew_seconds"
LOSSES = "firedrill_leadership_losses_total"
HALVINGS = "firedrill_delete_window_halvings_total"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run_firedrill(op, rep):
    name = f"bench-{rep}"
    before = op.requests()
    lease_before, losses_before = op.histogram(LEASE), op.counter(LOSSES)
    halvings_before = op.counter(HALVINGS)
    spec = f"""apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailure
metadata: {{name: {name}}}
spec: {{zone: {ZONE}, duration: 5s, baseline: 0s, faultOnly: true, target: {{namespaces: [{NS}]}}}}
"""
    t_apply = time.time()
    kubectl("apply", "-f", "-", stdin=spec)

    wait_for_phase(name, ("Completed", "Failed", "Aborted"), 3600)
    e = kjson("get", "dcf", name)
    st = e["status"]
    if st["phase"] != "Completed":
        raise SystemExit(f"firedrill ended {st['phase']}: {st.get('reason')}")
    dark = transition_time(e, "ZoneDown")
    fault = st.get("fault", {})
    requests = op.requests() - before
    lease_after = op.histogram(LEASE)
    p50, p99 = quantile(lease_before, lease_after, 0.5), quantile(lease_before, lease_after, 0.99)
    losses = int(op.counter(LOSSES) - losses_before)
    halvings = int(op.counter(HALVINGS) - halvings_before)
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"
    log(f"  lease renew latency p50 {ms(p50)}, p99 {ms(p99)}; leadership losses {losses}; "
        f"delete window halved {halvings} times")
    kubectl("delete", "dcf", name, "--wait=true")
    return {
        "seconds": dark - t_apply,
        "restoreSeconds": op.restore_seconds(name),
        "nodes": fault.get("nodesCordoned"),
        "pods": fault.get("podsKilled"),
        "requests": requests,
        "leaseRenewP50": p50,
        "leaseRenewP99": p99,
        "leadershipLosses": losses,
        "deleteWindowHalvings": halvings,
        "phases": {t["phase"]: parse_rfc3339(t["time"]) - t_apply for t in st.get("transitions", [])},
    }


def wait_for_phase(name, phases, timeout):
    """Wait until experiment `name` reaches one of `phases`, on one watch
    (a single kubectl process, idle between events: polling with a kubectl
    process every half second would take CPU from the operator and the API
    server while they are being timed; the times come from the experiment's
    own transitions, not from this wait)."""
    proc = subprocess.Popen(
        ["kubectl", "get", "dcf", name, "--watch", "-o", "jsonpath={.status.phase}{\"\\n\"}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.strip() in phases:
                return
        raise SystemExit(f"stopped waiting for {name} to reach {'/'.join(phases)} (watch ended)")
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()


def run_capped(cmd, cap, before):
    """Run a baseline; past `cap` seconds stop it (its whole process group)
    and project its time from the share of the zone's pods it deleted."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        left = pods_on_zone()
        deleted = before - left
        projected = cap * before / deleted if deleted > 0 else None
        log(f"  stopped after {cap}s: {deleted} of {before} pods deleted")
        return {"seconds": projected, "capped": True, "measuredSeconds": cap, "deleted": deleted,
                "pods": before, "left": left}
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return {"seconds": seconds, "pods": before, "left": pods_on_zone()}


def run_drain(rep, cap):
    nodes = [n.split("/", 1)[1] for n in zone_nodes()]
    r = run_capped(["kubectl", "drain", *nodes, "--force", "--grace-period=0", "--disable-eviction",
                    "--ignore-daemonsets", "--delete-emptydir-data"], cap, pods_on_zone())
    r["nodes"] = len(nodes)
    return r


SCRIPT = """set -euo pipefail
kubectl cordon -l {key}={zone}
for n in $(kubectl get nodes -l {key}={zone} -o name); do
  kubectl delete pods -A --field-selector spec.nodeName=${{n#node/}} --grace-period=0 --force
done
"""


def run_script(rep, cap):
    nodes = len(zone_nodes())
    r = run_capped(["bash", "-c", SCRIPT.format(key=KEY, zone=ZONE)], cap, pods_on_zone())
    r["nodes"] = nodes
    return r


def run_limit(deleter, concurrency):
    out = run([deleter, "--zone", ZONE, "--concurrency", str(concurrency)], timeout=3600).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["seconds"] = r.pop("totalSeconds")
    r["left"] = pods_on_zone()
    return r


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def svg_chart(results, path):
    """Time to take the zone down against cluster size, one line per contender."""
    names = ["firedrill", "kubectl drain", "cordon + delete script", "limit (parallel deleter)"]
    colors = ["#d9480f", "#1c7ed6", "#7048e8", "#2b8a3e"]
    sizes = [r["nodes"] for r in results]
    series = {n: [dict(r["contenders"].get(n, {}).get("seconds") or {}, capped=r["contenders"].get(n, {}).get("capped"))
                  if r["contenders"].get(n, {}).get("seconds") else {} for r in results] for n in names}
    # A log scale: the baselines take hundreds of times longer than the rest.
    import math
    vals = [s[k] for v in series.values() for s in v if s for k in ("min", "max") if s.get(k)]
    lo = math.floor(math.log10(min(vals + [1.0])))
    hi = math.ceil(math.log10(max(vals + [10.0])))
    W, H, L, B, T, R = 720, 420, 70, 60, 40, 200
    pw, ph = W - L - R, H - T - B

    def x(i):
        return L + (pw * i / max(1, len(sizes) - 1))

    def y(v):
        return T + ph - ph * (math.log10(max(v, 10.0 ** lo)) - lo) / max(1, hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="22" font-size="15" font-weight="bold">Taking down one zone of three: seconds against cluster size</text>',
           f'<line x1="{L}" y1="{T + ph}" x2="{L + pw}" y2="{T + ph}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{T + ph}" stroke="black"/>']
    for k in range(lo, hi + 1):
        v = 10.0 ** k
        out.append(f'<line x1="{L - 4}" y1="{y(v):.1f}" x2="{L + pw}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for i, r in enumerate(results):
        out.append(f'<text x="{x(i):.1f}" y="{T + ph + 18}" text-anchor="middle">{r["nodes"]} nodes</text>')
        out.append(f'<text x="{x(i):.1f}" y="{T + ph + 32}" text-anchor="middle" fill="#555">{r["pods"]} pods</text>')
    out.append(f'<text x="18" y="{T + ph / 2}" transform="rotate(-90 18 {T + ph / 2})" text-anchor="middle">seconds, log scale (median; bars: min to max)</text>')
    for (name, color) in zip(names, colors):
        pts = [(x(i), y(s["median"]), s) for i, s in enumerate(series[name]) if s]
        if not pts:
            continue
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, " ".join(f"{a:.1f},{b:.1f}" for a, b, _ in pts)))
        for a, b, s in pts:
            out.append(f'<line x1="{a:.1f}" y1="{y(s["min"]):.1f}" x2="{a:.1f}" y2="{y(s["max"]):.1f}" stroke="{color}"/>')
            fill = "white" if s.get("capped") else color
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{fill}" stroke="{color}"/>')
    for k, (name, color) in enumerate(zip(names, colors)):
        yy = T + 10 + 20 * k
        out.append(f'<rect x="{L + pw + 16}" y="{yy - 9}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{L + pw + 34}" y="{yy + 1}">{name}</text>')
    if any(s.get("capped") for v in series.values() for s in v):
        yy = T + 10 + 20 * len(names) + 10
        out.append(f'<circle cx="{L + pw + 22}" cy="{yy - 3}" r="3.5" fill="white" stroke="black"/>')
        out.append(f'<text x="{L + pw + 34}" y="{yy + 1}">projected (run stopped)</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def fmt(s, unit="s", digits=1):
    if not s:
        return "-"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def markdown(doc):
    lines = [f"Machine: {doc['machine']}", ""]
    for r in doc["results"]:
        zone = r["zone"]
        lines.append(f"**{r['nodes']} nodes, {r['pods']} pods** (zone {ZONE}: {zone['nodes']} nodes, {zone['pods']} pods; median (min–max) of the runs)")
        lines.append("")
        lines.append("| contender | runs | zone down | per pod deleted | notes |")
        lines.append("|---|---|---|---|---|")
        for name, c in r["contenders"].items():
            per = c["seconds"]["median"] / max(1, c.get("pods") or zone["pods"]) * 1000 if c.get("seconds") else None
            notes = c.get("notes", "")
            took = ("~" if c.get("capped") else "") + fmt(c.get("seconds"))
            runs = c.get("reps", len(c.get("runs", [])))
            lines.append(f"| {name} | {runs} | {took} | {per:.2f} ms |{' ' + notes if notes else ''} |" if per is not None else f"| {name} | {runs} | - | - | {notes} |")
        lines.append("")
    return "\n".join(lines)


def machine():
    cpus = os.cpu_count()
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cpus} CPUs ({model}), {mem:.0f} GiB memory, Linux {os.uname().release}"


def build_result(nodes, total, zone, contenders, runs, settle_times, rss, best_concurrency):
    """One size's entry of the results, from the runs so far."""
    names = {"firedrill": "firedrill", "drain": "kubectl drain", "script": "cordon + delete script",
             "limit": "limit (parallel deleter)"}
    result = {"nodes": nodes, "pods": total, "zone": zone, "contenders": {},
              "settleSeconds": summary(settle_times)}
    for c in contenders:
        rs = runs[c]
        entry = {"seconds": summary([r["seconds"] for r in rs]), "reps": len(rs), "runs": rs,
                 "pods": statistics.median([r["pods"] for r in rs if r.get("pods")] or [zone["pods"]])}
        if c == "firedrill":
            entry["restoreSeconds"] = summary([r["restoreSeconds"] for r in rs])
            entry["requests"] = summary([r["requests"] for r in rs])
            entry["peakRssMiB"] = rss
            entry["leaseRenewP50"] = summary([r.get("leaseRenewP50") for r in rs])
            entry["leaseRenewP99"] = summary([r.get("leaseRenewP99") for r in rs])
            entry["leadershipLosses"] = sum(r.get("leadershipLosses", 0) for r in rs)
            lease_ms = lambda s: "-" if not s else f"{s['max'] * 1000:.0f} ms"
            entry["notes"] = (f"restore {fmt(entry['restoreSeconds'], digits=2)}; "
                              f"{entry['requests']['median']:.0f} API requests; peak RSS {rss:.0f} MiB; "
                              f"lease renew p50 {lease_ms(entry['leaseRenewP50'])}, "
                              f"p99 {lease_ms(entry['leaseRenewP99'])} (worst run); "
                              f"leadership losses {entry['leadershipLosses']}")
        if c == "limit":
            entry["concurrency"] = best_concurrency
            entry["notes"] = f"concurrency {best_concurrency}; {rs[0].get('requests')} API requests"
        if c in ("drain", "script"):
            capped = [r for r in rs if r.get("capped")]
            if capped:
                entry["capped"] = True
                entry["notes"] = "; ".join(
                    f"stopped after {r['measuredSeconds']:.0f}s with {r['deleted']} of {r['pods']} pods deleted, time projected"
                    for r in capped)
            else:
                entry["notes"] = "pods left on the zone: %s" % ",".join(str(r.get("left")) for r in rs)
        result["contenders"][names[c]] = entry
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100:3000,300:9000,1000:30000",
                    help="NODES:PODS,... smallest first; the last is the main size")
    ap.add_argument("--reps", type=int, default=3, help="runs per contender at the main size")
    ap.add_argument("--small-reps", type=int, default=1, help="runs per contender at the smaller sizes")
    ap.add_argument("--deployments", type=int, default=30)
    ap.add_argument("--concurrency", default="64,256,1024", help="the limit: concurrencies tried on the first run; the best is kept")
    ap.add_argument("--contenders", default="firedrill,drain,script,limit")
    ap.add_argument("--baseline-reps", type=int, help="runs of drain and the script at the main size (default: --reps)")
    ap.add_argument("--baseline-cap", type=float, default=7200,
                    help="stop drain or the script after this many seconds and project its time from the pods it deleted")
    ap.add_argument("--out", default=os.path.join(REPO, "out/bench"))
    ap.add_argument("--kwok-parallelism", default="16")
    ap.add_argument("--operator-args", default="", help="extra arguments for `firedrill operator`, e.g. '--concurrency=256'")
    ap.add_argument("--operator-binary",
                    help="the firedrill binary to bench (default: this checkout's release build), e.g. the image's "
                         "static musl build, to measure the allocator that ships")
    ap.add_argument("--reuse", action="store_true",
                    help="use the testbed already running in FIREDRILL_TESTBED_DIR (grown to the first size or more) "
                         "and leave it running")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sizes = [tuple(int(v) for v in s.split(":")) for s in args.sizes.split(",")]
    contenders = args.contenders.split(",")

    cache = os.environ.get("FIREDRILL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "firedrill")
    rust = run(["rustc", "--version"]).stdout.split()[1]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(cache, "cargo", f"rust-{rust}")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    log("building the operator and the parallel deleter (release)")
    run(["cargo", "build", "--release", "-q", "-p", "firedrill", "--bin", "firedrill", "--example", "bench_deleter"], env=env, capture=False)
    binary = args.operator_binary or os.path.join(target, "release/firedrill")
    deleter = os.path.join(target, "release/examples/bench_deleter")

    state = os.environ.get("FIREDRILL_TESTBED_DIR") or run(["mktemp", "-d", "/tmp/firedrill-bench.XXXXXX"]).stdout.strip()
    os.environ["FIREDRILL_TESTBED_DIR"] = state
    os.environ["FIREDRILL_TESTBED_DATAPLANE"] = "0"
    os.environ["FIREDRILL_TESTBED_KWOK_PARALLELISM"] = args.kwok_parallelism
    doc = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "settings": vars(args), "results": []}
    try:
        if args.reuse:
            log(f"using the testbed in {state}")
        else:
            log(f"starting the testbed with {sizes[0][0]} nodes")
            run([TESTBED, "up", str(sizes[0][0])], capture=False)
        for line in run([TESTBED, "env"]).stdout.splitlines():
            m = re.match(r"export (\w+)=(.*)", line)
            if m:
                os.environ[m.group(1)] = m.group(2).strip("'\"").replace("$PATH", os.environ.get("PATH", ""))
        kubectl("apply", "--server-side", "-f", os.path.join(REPO, "crds"))
        if not args.reuse:
            kubectl("create", "namespace", NS)
        have = len(kubectl("get", "nodes", "-o", "name").split()) if args.reuse else sizes[0][0]
        best_concurrency = None
        for idx, (nodes, pods) in enumerate(sizes):
            main_size = idx == len(sizes) - 1
            reps = args.reps if main_size else args.small_reps
            total = grow(nodes, pods, have, args.deployments)
            have = nodes
            zone = {"nodes": len(zone_nodes()), "pods": pods_on_zone()}
            log(f"size {nodes} nodes / {total} pods: the zone has {zone['nodes']} nodes, {zone['pods']} pods")
            op = Operator(binary, args.out, nodes, args.operator_args.split())
            runs = {c: [] for c in contenders}
            settle_times = []
            try:
                for rep in range(reps):
                    for c in contenders:
                        if c in ("drain", "script") and main_size and args.baseline_reps is not None \
                                and rep >= args.baseline_reps:
                            continue
                        log(f"{c}, run {rep + 1} of {reps}")
                        if c == "firedrill":
                            r = run_firedrill(op, f"{nodes}-{rep}")
                        elif c == "drain":
                            r = run_drain(rep, args.baseline_cap)
                        elif c == "script":
                            r = run_script(rep, args.baseline_cap)
                        elif c == "limit":
                            if best_concurrency is None:
                                tried = {}
                                for conc in [int(v) for v in args.concurrency.split(",")]:
                                    tr = run_limit(deleter, conc)
                                    tried[conc] = tr["seconds"]
                                    log(f"  limit at concurrency {conc}: {tr['seconds']:.1f}s")
                                    settle_times.append(settle(total))
                                best_concurrency = min(tried, key=tried.get)
                                doc["limitConcurrencySweep"] = tried
                                log(f"  best concurrency {best_concurrency}")
                            r = run_limit(deleter, best_concurrency)
                        log(f"  {json.dumps({k: v for k, v in r.items() if k != 'phases'})}")
                        runs[c].append(r)
                        partial = build_result(nodes, total, zone, [k for k in contenders if runs[k]], runs,
                                               settle_times, op.peak_rss_mib(), best_concurrency)
                        partial["partial"] = True
                        with open(os.path.join(args.out, "bench-results.json"), "w") as f:
                            json.dump(dict(doc, results=doc["results"] + [partial]), f, indent=2)
                        settle_times.append(settle(total))
                rss = op.peak_rss_mib()
            finally:
                op.stop()
            result = build_result(nodes, total, zone, contenders, runs, settle_times, rss, best_concurrency)
            doc["results"].append(result)
            with open(os.path.join(args.out, "bench-results.json"), "w") as f:
                json.dump(doc, f, indent=2)
            log("\n" + markdown({"machine": doc["machine"], "results": [result]}))
    finally:
        if not args.reuse:
            run([TESTBED, "down"], check=False, capture=False)
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(os.path.join(args.out, "bench-results.json"), "w") as f:
        json.dump(doc, f, indent=2)
    md = markdown(doc)
    with open(os.path.join(args.out, "bench-results.md"), "w") as f:
        f.write(md + "\n")
    svg_chart(doc["results"], os.path.join(args.out, "bench-scale.svg"))
    print(md)
    print(f"\nwritten: {args.out}/bench-results.md, bench-results.json, bench-scale.svg")


if __name__ == "__main__":
    main()
