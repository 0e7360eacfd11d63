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

The operator runs as the chart's ServiceAccount, with the chart's RBAC and
its API Priority and Fairness objects (an admin is exempt from APF, which
would hide what the chart does), unless --operator-identity admin.

What the load costs others, measured during every firedrill and limit run:
- a bystander, an ordinary user (a client certificate of its own, no
  group), GETs one small ConfigMap every 0.5 s; its latency while the zone
  is taken down (p50/p99/max, a failed request counted as 10 s);
- the replacements: a third of the Deployments may move (their spread
  honours taints: nodeTaintsPolicy Honor), so the controllers recreate and
  place their pods outside the dark zone; the time from the start of the
  injection until they are all Ready again, the zone still dark. The others
  wait, Pending, for the zone to come back, as before. Between runs those
  moved are sent back (their surplus in the other zones is deleted, and the
  replacements can only go to the zone that was dark).
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import http.client
import math
import ssl
import threading
import time
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTBED = os.path.join(REPO, "tests/testbed/testbed.sh")
KEY = "topology.kubernetes.io/zone"
ZONE = "zone-a"
ZONES = ("zone-a", "zone-b", "zone-c")
NS = "bench"
# The operator's namespace and release when it runs as the chart's ServiceAccount.
OPERATOR_NS = "firedrill-bench"
RELEASE = "bench"


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


def ensure_namespace(name):
    """Create namespace `name` unless it exists (a bench may reuse a testbed)."""
    kubectl("apply", "-f", "-", stdin=kubectl("create", "namespace", name, "--dry-run=client", "-o", "yaml"))


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


def movable(i):
    """Every third Deployment may move out of a dark zone."""
    return i % 3 == 0


def deployment_yaml(i, replicas):
    name = f"app-{i:02d}"
    group = "movable" if movable(i) else "pinned"
    # Honor: a tainted (cordoned) node's zone is left out of the skew, so the
    # replacements are placed in the other zones; Ignore (the default): the
    # dark zone still counts, and they wait for it, Pending.
    policy = "Honor" if movable(i) else "Ignore"
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NS}, labels: {{group: {group}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}, group: {group}}}}}
    spec:
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: {KEY}, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: {policy}, labelSelector: {{matchLabels: {{app: {name}}}}}}}
      containers: [{{name: app, image: registry.invalid/app:1, resources: {{requests: {{cpu: 10m, memory: 16Mi}}}}}}]
"""


def grow(nodes, pods, have_nodes, deployments):
    """Grow the testbed to `nodes` nodes and `pods` pods."""
    if nodes > have_nodes:
        log(f"adding {nodes - have_nodes} nodes")
        run([TESTBED, "nodes", str(nodes - have_nodes), str(have_nodes)], capture=False)
    per = pods // deployments
    docs = "---\n".join(deployment_yaml(i, per) for i in range(deployments))
    t0 = time.monotonic()
    kubectl("apply", "--server-side", "-f", "-", stdin=docs)
    log(f"waiting for {per * deployments} pods to be Ready")
    wait("the pods", lambda: deployments_ready(per * deployments), 3600, every=5)
    log(f"{nodes} nodes, {per * deployments} pods Ready in {time.monotonic() - t0:.0f}s")
    return per * deployments


def settle(expected):
    """Back to the starting state: the zone schedulable, every pod Ready, and
    the movable Deployments' pods spread over the three zones again."""
    t0 = time.monotonic()
    kubectl("uncordon", "-l", f"{KEY}={ZONE}")
    wait("the cluster to recover", lambda: deployments_ready(expected), 1800, every=3)
    surplus, _ = movable_layout()
    if surplus:
        for i in range(0, len(surplus), 500):
            kubectl("-n", NS, "delete", "pods", "--grace-period=0", "--force", "--wait=false",
                    "--ignore-not-found", *surplus[i:i + 500])
        log(f"  {len(surplus)} movable pods deleted outside {ZONE}, so that their replacements return to it")
        # Deployment status lags the deletes: wait on the pods themselves.
        wait("the movable pods to return to the zone", lambda: movable_layout()[1], 1800, every=3)
        wait("the cluster to recover", lambda: deployments_ready(expected), 1800, every=3)
    return time.monotonic() - t0


def movable_layout():
    """The movable Deployments' pods to delete so that they spread over the
    three zones again (their replacements stayed out of the zone once it
    came back), and whether every one of them is spread (at most one pod
    between its fullest and emptiest zone) with all its replicas bound and
    Ready. Deleting the surplus sends the replacements back: with maxSkew 1
    they can only go to the zone with the fewest, the one that was dark."""
    zone_of = {}
    for line in kubectl("get", "nodes", "--no-headers", "-o",
                        f"custom-columns=N:.metadata.name,Z:.metadata.labels.{KEY.replace('.', chr(92) + '.')}").splitlines():
        name, zone = line.split()
        zone_of[name] = zone
    replicas = {d["metadata"]["name"]: d["spec"].get("replicas", 0)
                for d in kjson("-n", NS, "get", "deployments", "-l", "group=movable")["items"]}
    by_app = {app: {z: [] for z in ZONES} for app in replicas}
    ready = {app: 0 for app in replicas}
    for line in kubectl("-n", NS, "get", "pods", "-l", "group=movable", "--no-headers", "-o",
                        "custom-columns=N:.metadata.name,A:.metadata.labels.app,NODE:.spec.nodeName,"
                        "D:.metadata.deletionTimestamp,R:.status.conditions[?(@.type==\"Ready\")].status").splitlines():
        name, app, node, deleting, is_ready = line.split()
        if deleting != "<none>" or app not in by_app:
            continue
        by_app[app].setdefault(zone_of.get(node, "none"), []).append(name)
        ready[app] += is_ready == "True"
    surplus = []
    done = True
    for app, zones in by_app.items():
        counts = [len(zones[z]) for z in ZONES]
        spread = max(counts) - min(counts) <= 1 and not zones.get("none")
        done &= spread and ready[app] == replicas[app]
        if spread:
            continue
        # At most an even share in each other zone (of a remainder of two,
        # one each), the rest for the zone.
        share = replicas[app] // len(ZONES) + (replicas[app] % len(ZONES) == 2)
        for z in ZONES:
            if z != ZONE:
                surplus += zones[z][share:]
    return surplus, done


def kubeconfig_fields(path):
    """server, certificate-authority, client-certificate, client-key of a
    testbed kubeconfig (files, not data)."""
    fields = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.strip().partition(": ")
            if k in ("server", "certificate-authority", "client-certificate", "client-key", "token"):
                fields[k] = v.strip()
    return fields


class Api:
    """GETs to the API server on one kept-alive connection, by a client
    certificate (or a bearer token), as a small client would make them."""

    def __init__(self, server, ca, cert=None, key=None, token=None, timeout=10):
        u = urllib.parse.urlparse(server)
        self.host, self.port = u.hostname, u.port or 443
        self.ctx = ssl.create_default_context(cafile=ca)
        if cert:
            self.ctx.load_cert_chain(cert, key)
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.conn = None

    def get(self, path):
        """(status, parsed body or None, seconds taken); raises on a broken connection."""
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        t0 = time.monotonic()
        try:
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
            body = r.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        took = time.monotonic() - t0
        try:
            parsed = json.loads(body) if r.status == 200 else None
        except ValueError:
            parsed = None
        return r.status, parsed, took


FAILED_AS = 10.0  # a failed bystander request counts as this many seconds


class Sampler:
    """A thread that calls `probe()` every `every` seconds and keeps
    (wall time, value) pairs until stopped."""

    def __init__(self, probe, every):
        self.probe, self.every = probe, every
        self.samples = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        nxt = time.monotonic()
        told = False
        while not self.done.is_set():
            t = time.time()
            try:
                v = self.probe()
            except Exception as e:
                v = None
                if not told:
                    log(f"  (a sampler's request failed: {e!r}; later failures are not printed)")
                    told = True
            self.samples.append((t, v))
            # After a slow call, the next on time rather than a burst.
            nxt = max(nxt + self.every, time.monotonic())
            self.done.wait(max(0.0, nxt - time.monotonic()))

    def between(self, t0, t1):
        return [(t, v) for t, v in list(self.samples) if t0 <= t <= t1]

    def stop(self):
        self.done.set()
        self.thread.join(15)


def bystander_setup(state):
    """An ordinary user (a certificate of its own, in no group) that may read
    one ConfigMap; returns its Api."""
    pki = os.path.join(state, "pki")
    key, csr, crt = (os.path.join(pki, f"bench-bystander.{x}") for x in ("key", "csr", "crt"))
    if not os.path.exists(crt):
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bench-bystander",
             "-keyout", key, "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(pki, "ca.crt"),
             "-CAkey", os.path.join(pki, "ca.key"), "-CAcreateserial", "-days", "30", "-out", crt,
             "-extfile", os.path.join(pki, "client.ext")])
    kubectl("apply", "-f", "-", stdin=f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: bystander, namespace: {NS}}}
data: {{greeting: hello}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: bystander, namespace: {NS}}}
rules: [{{apiGroups: [""], resources: [configmaps], resourceNames: [bystander], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: bystander, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: bystander}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: bench-bystander}}]
""")
    admin = kubeconfig_fields(os.environ["KUBECONFIG"])
    return Api(admin["server"], admin["certificate-authority"], cert=crt, key=key)


class Bystander:
    """The bystander's GET every 0.5 s, for the whole bench."""
    PATH = f"/api/v1/namespaces/{NS}/configmaps/bystander"

    def __init__(self, api):
        self.api = api
        status, _, _ = api.get(self.PATH)
        if status != 200:
            raise SystemExit(f"the bystander cannot read its ConfigMap: HTTP {status}")
        self.sampler = Sampler(self._get, 0.5)

    def _get(self):
        try:
            status, _, took = self.api.get(self.PATH)
        except Exception as e:
            if not getattr(self, "told", False):
                log(f"  (a bystander GET failed: {e!r}; it counts as {FAILED_AS:.0f}s)")
                self.told = True
            return FAILED_AS
        return took if status == 200 else FAILED_AS

    def latency(self, t0, t1):
        """p50, p99, max and the sample count of the GETs started in [t0, t1]."""
        vals = sorted(v for _, v in self.sampler.between(t0, t1) if v is not None)
        if not vals:
            return None
        pick = lambda q: vals[min(len(vals) - 1, math.ceil(q * len(vals)) - 1)]
        return {"p50": pick(0.5), "p99": pick(0.99), "max": vals[-1], "n": len(vals),
                "failed": sum(1 for v in vals if v >= FAILED_AS)}


class Replicas:
    """The movable Deployments' ready replicas, read once a second by the admin."""
    PATH = f"/apis/apps/v1/namespaces/{NS}/deployments?labelSelector=group%3Dmovable"

    def __init__(self, api):
        self.api = api
        if self._read() is None:
            raise SystemExit("cannot read the movable Deployments through the API")
        self.sampler = Sampler(self._read, 1.0)

    def _read(self):
        status, body, _ = self.api.get(self.PATH)
        if status != 200 or body is None:
            return None
        want = sum(d["spec"].get("replicas", 0) for d in body["items"])
        ready = sum(d.get("status", {}).get("readyReplicas", 0) or 0 for d in body["items"])
        return (ready, want)

    def back_after(self, t0, t_down, t1):
        """Seconds from t0 (the injection began) until every movable replica
        was Ready again, at the first reading from t_down (every pod of the
        zone deleted) on; None if not back by t1."""
        for t, v in self.sampler.between(t_down, t1):
            if v is not None and v[0] >= v[1]:
                return t - t0
        return None

    def wait_back(self, t0, t_down, timeout):
        """Wait (up to `timeout` from t0) until back_after is known."""
        while time.time() - t0 < timeout:
            took = self.back_after(t0, t_down, time.time())
            if took is not None:
                return took
            time.sleep(1)
        return None


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

    def __init__(self, binary, outdir, size, extra=(), env=None):
        self.port = free_port()
        self.log = open(os.path.join(outdir, f"operator-{size}.log"), "w")
        self.stopping = False
        self.proc = subprocess.Popen(
            [binary, "operator", f"--metrics-bind=127.0.0.1:{self.port}", "--log-format=json", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
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

    def by_label(self, name):
        """The series of metric `name` with one label: {label value: value}."""
        out = {}
        for line in (self.metrics() or "").splitlines():
            m = re.match(re.escape(name) + r'\{\w+="([^"]*)"\} (\S+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def histogram(self, name):
        """The cumulative buckets of histogram `name`: [(le, count)]."""
        return [(float(le), count) for le, count in self.by_label(name + "_bucket").items()]

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

    def answers(self):
        """The pod delete answers so far, by what they said: {fast: n, slow: n, ...}."""
        return {k: int(v) for k, v in self.by_label("firedrill_delete_answers_total").items()}

    def requests(self):
        return int(sum(self.by_label("firedrill_api_requests_total").values()))

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


def operator_identity(values=()):
    """The chart's ServiceAccount, RBAC and API Priority and Fairness
    objects, applied in OPERATOR_NS, with chart `values` (KEY=VALUE) set."""
    helm = run([TESTBED, "helm"]).stdout.strip()
    sets = [a for v in values for a in ("--set", v)]
    docs = run([helm, "template", RELEASE, os.path.join(REPO, "charts/firedrill"), "--namespace", OPERATOR_NS, *sets,
                "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml",
                "--show-only", "templates/apf.yaml"]).stdout
    ensure_namespace(OPERATOR_NS)
    kubectl("apply", "-n", OPERATOR_NS, "-f", "-", stdin=docs)
    log(f"the operator runs as ServiceAccount {OPERATOR_NS}/firedrill, with the chart's RBAC and FlowSchemas")


def operator_env(state):
    """The operator's environment: a kubeconfig (in the testbed's state
    directory) with a fresh token of the chart's ServiceAccount, made for
    each operator started, so that no bench outlives it."""
    token = kubectl("-n", OPERATOR_NS, "create", "token", "firedrill", "--duration=48h").strip()
    admin = kubeconfig_fields(os.environ["KUBECONFIG"])
    path = os.path.join(state, "bench-operator.kubeconfig")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters: [{{name: testbed, cluster: {{server: "{admin['server']}", certificate-authority: "{admin['certificate-authority']}"}}}}]
users: [{{name: firedrill, user: {{token: "{token}"}}}}]
contexts: [{{name: firedrill, context: {{cluster: testbed, user: firedrill}}}}]
current-context: firedrill
""")
    return dict(os.environ, KUBECONFIG=path, POD_NAMESPACE=OPERATOR_NS)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run_firedrill(op, rep, dark, bystander, replicas):
    name = f"bench-{rep}"
    before = op.requests()
    lease_before, losses_before = op.histogram(LEASE), op.counter(LOSSES)
    halvings_before = op.counter(HALVINGS)
    answers_before = op.answers()
    spec = f"""apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailure
metadata: {{name: {name}}}
spec: {{zone: {ZONE}, duration: {dark}s, baseline: 0s, faultOnly: true, target: {{namespaces: [{NS}]}}}}
"""
    t_apply = time.time()
    kubectl("apply", "-f", "-", stdin=spec)

    wait_for_phase(name, ("Completed", "Failed", "Aborted"), 3600)
    e = kjson("get", "dcf", name)
    st = e["status"]
    if st["phase"] != "Completed":
        raise SystemExit(f"firedrill ended {st['phase']}: {st.get('reason')}")
    dark = transition_time(e, "ZoneDown")
    restoring = transition_time(e, "Restoring")
    fault = st.get("fault", {})
    phases = {t["phase"]: parse_rfc3339(t["time"]) - t_apply for t in st.get("transitions", [])}
    # Transitions are stamped when a reconcile starts, and the one that
    # plans enters Baseline: with no baseline, the gap to Injecting is the
    # planning reconcile (listing the nodes and pods, the plan, its status).
    planning = None
    if "Baseline" in phases and "Injecting" in phases:
        planning = phases["Injecting"] - phases["Baseline"]
    injecting = transition_time(e, "Injecting") or t_apply
    by = bystander.latency(injecting, dark)
    back = replicas.back_after(injecting, dark, restoring or time.time())
    log(f"  bystander while the zone went down: {fmt_latency(by)}; movable replicas Ready again "
        f"{'-' if back is None else f'{back:.1f}s'} after the injection began (zone still dark)")
    requests = op.requests() - before
    lease_after = op.histogram(LEASE)
    p50, p99 = quantile(lease_before, lease_after, 0.5), quantile(lease_before, lease_after, 0.99)
    losses = int(op.counter(LOSSES) - losses_before)
    halvings = int(op.counter(HALVINGS) - halvings_before)
    answers = {k: v - answers_before.get(k, 0) for k, v in op.answers().items()}
    answers = {k: v for k, v in answers.items() if v}
    ms = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"
    log(f"  lease renew latency p50 {ms(p50)}, p99 {ms(p99)}; leadership losses {losses}; "
        f"delete window halved {halvings} times; delete answers {answers}")
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
        "deleteAnswers": answers,
        "planningSeconds": planning,
        "bystander": by,
        "replacementSeconds": back,
        "phases": phases,
    }


def fmt_latency(b):
    if not b:
        return "no samples"
    return (f"p50 {b['p50'] * 1000:.0f} ms, p99 {b['p99'] * 1000:.0f} ms, max {b['max'] * 1000:.0f} ms "
            f"({b['n']} GETs, {b['failed']} failed)")


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


def run_limit(deleter, concurrency, dark=None, bystander=None, replicas=None):
    t0 = time.time()
    out = run([deleter, "--zone", ZONE, "--concurrency", str(concurrency)], timeout=3600).stdout
    t1 = time.time()
    r = json.loads(out.strip().splitlines()[-1])
    r["seconds"] = r.pop("totalSeconds")
    r["left"] = pods_on_zone()
    if bystander is not None:
        r["bystander"] = bystander.latency(t0, t1)
        # The zone stays cordoned until settle(): wait for the replacements here.
        r["replacementSeconds"] = replicas.wait_back(t0, t1, dark)
        back = r["replacementSeconds"]
        log(f"  bystander while the zone went down: {fmt_latency(r['bystander'])}; movable replicas Ready again "
            f"{'-' if back is None else f'{back:.1f}s'} after the start")
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
            entry["planningSeconds"] = summary([r.get("planningSeconds") for r in rs])
            lease_ms = lambda s: "-" if not s else f"{s['max'] * 1000:.0f} ms"
            entry["notes"] = (f"restore {fmt(entry['restoreSeconds'], digits=2)}; "
                              f"planning {fmt(entry['planningSeconds'], digits=2)}; "
                              f"{entry['requests']['median']:.0f} API requests; peak RSS {rss:.0f} MiB; "
                              f"lease renew p50 {lease_ms(entry['leaseRenewP50'])}, "
                              f"p99 {lease_ms(entry['leaseRenewP99'])} (worst run); "
                              f"leadership losses {entry['leadershipLosses']}")
            # Against the limit in the same round of runs.
            limit = runs.get("limit") or []
            ratios = [f["seconds"] / l["seconds"] for f, l in zip(rs, limit) if f.get("seconds") and l.get("seconds")]
            if ratios:
                entry["againstLimit"] = summary(ratios)
                entry["notes"] += f"; {max(ratios):.2f}× the limit (worst run)"
        if c == "limit":
            entry["concurrency"] = best_concurrency
            entry["notes"] = f"concurrency {best_concurrency}; {rs[0].get('requests')} API requests"
        if c in ("firedrill", "limit") and any(r.get("bystander") for r in rs):
            entry["bystanderP99"] = summary([(r.get("bystander") or {}).get("p99") for r in rs])
            entry["bystanderMax"] = summary([(r.get("bystander") or {}).get("max") for r in rs])
            entry["replacementSeconds"] = summary([r.get("replacementSeconds") for r in rs])
            worst = entry["bystanderP99"]["max"] if entry["bystanderP99"] else None
            gets = sum((r.get("bystander") or {}).get("n", 0) for r in rs)
            entry["notes"] += (f"; bystander p99 {'-' if worst is None else f'{worst * 1000:.0f} ms'} (worst run; "
                               f"{gets} GETs in all); "
                               f"movable replicas Ready again {fmt(entry['replacementSeconds'])}")
            if any(r.get("replacementSeconds") is None for r in rs):
                entry["notes"] += " (in some runs not within the dark window)"
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
    ap.add_argument("--concurrency", default="64,256,1024", help="the limit: concurrencies tried on the first run; the best is kept (a single one: no trial runs)")
    ap.add_argument("--contenders", default="firedrill,drain,script,limit")
    ap.add_argument("--baseline-reps", type=int, help="runs of drain and the script at the main size (default: --reps)")
    ap.add_argument("--baseline-cap", type=float, default=7200,
                    help="stop drain or the script after this many seconds and project its time from the pods it deleted")
    ap.add_argument("--out", default=os.path.join(REPO, "out/bench"))
    ap.add_argument("--kwok-parallelism", default="16")
    ap.add_argument("--dark", type=int, default=180,
                    help="seconds firedrill keeps the zone dark (and the most the limit's replacements are waited for): "
                         "the movable Deployments' replacements are timed while it is dark")
    ap.add_argument("--operator-identity", choices=("serviceaccount", "admin"), default="serviceaccount",
                    help="run the operator as the chart's ServiceAccount with its RBAC and FlowSchemas (default), "
                         "or as the testbed's admin, whom API Priority and Fairness exempts")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a chart value for the operator's ServiceAccount, RBAC and FlowSchemas (repeatable), e.g. "
                         "apiPriorityAndFairness.bulk.nominalConcurrencyShares=60")
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
        ensure_namespace(NS)
        as_sa = args.operator_identity == "serviceaccount"
        if args.set and not as_sa:
            raise SystemExit("--set applies to the chart's objects for the ServiceAccount; "
                             "with --operator-identity admin the operator is exempt from them")
        if as_sa:
            operator_identity(args.set)
        bystander = Bystander(bystander_setup(state))
        admin = kubeconfig_fields(os.environ["KUBECONFIG"])
        replicas = Replicas(Api(admin["server"], admin["certificate-authority"],
                                cert=admin["client-certificate"], key=admin["client-key"]))
        have = len(kubectl("get", "nodes", "-o", "name").split()) if args.reuse else sizes[0][0]
        best_concurrency = None
        for idx, (nodes, pods) in enumerate(sizes):
            main_size = idx == len(sizes) - 1
            reps = args.reps if main_size else args.small_reps
            total = grow(nodes, pods, have, args.deployments)
            have = nodes
            zone = {"nodes": len(zone_nodes()), "pods": pods_on_zone()}
            log(f"size {nodes} nodes / {total} pods: the zone has {zone['nodes']} nodes, {zone['pods']} pods")
            op = Operator(binary, args.out, nodes, args.operator_args.split(),
                          env=operator_env(state) if as_sa else None)
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
                            r = run_firedrill(op, f"{nodes}-{rep}", args.dark, bystander, replicas)
                        elif c == "drain":
                            r = run_drain(rep, args.baseline_cap)
                        elif c == "script":
                            r = run_script(rep, args.baseline_cap)
                        elif c == "limit":
                            sweep = [int(v) for v in args.concurrency.split(",")]
                            if best_concurrency is None and len(sweep) == 1:
                                # Nothing to choose: the measured run is the only one.
                                best_concurrency = sweep[0]
                            if best_concurrency is None:
                                tried = {}
                                for conc in sweep:
                                    tr = run_limit(deleter, conc)
                                    tried[conc] = tr["seconds"]
                                    log(f"  limit at concurrency {conc}: {tr['seconds']:.1f}s")
                                    settle_times.append(settle(total))
                                best_concurrency = min(tried, key=tried.get)
                                doc["limitConcurrencySweep"] = tried
                                log(f"  best concurrency {best_concurrency}")
                            r = run_limit(deleter, best_concurrency, args.dark, bystander, replicas)
                        log(f"  {json.dumps({k: v for k, v in r.items() if k not in ('phases', 'bystander')})}")
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
