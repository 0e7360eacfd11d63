#!/usr/bin/env bash
# The firedrill testbed: a real Kubernetes control plane on loopback.
#
#   testbed.sh build            build (or reuse) the cached binaries, print their directory
#   testbed.sh up [NODES] [--real M]
#                               start etcd, kube-apiserver, kube-controller-manager,
#                               kube-scheduler and kwok; create NODES fake nodes
#                               spread over zone-a, zone-b, zone-c (default 6);
#                               with --real, also M real nodes (kubelet, containerd,
#                               kube-proxy; see realnodes.sh), and no data plane
#   testbed.sh import ARCHIVE [BASE-NAME]
#                               import an OCI image archive into every real node
#   testbed.sh nodes N [FIRST]  create N more fake nodes (numbered from FIRST)
#   testbed.sh down             stop every process `up` started, by PID
#   testbed.sh apiserver stop|start
#                               stop only the kube-apiserver (a control-plane
#                               outage), and start it again as it was
#   testbed.sh etcd pause|resume
#                               freeze etcd (SIGSTOP: the API server's storage hangs), thaw it (SIGCONT)
#   testbed.sh status           what is running
#   testbed.sh env              print shell exports (KUBECONFIG, PATH) for the running testbed
#   testbed.sh helm             build (or reuse) helm from helm.sh/helm/v3, print its path
#
# Everything the control plane is built from comes from the Go module proxy:
# k8s.io/kubernetes (with its staging modules), go.etcd.io/etcd/server/v3 and
# sigs.k8s.io/kwok. Binaries are cached outside the clone, keyed by those
# versions and by a hash of this module's sources, so a cold build happens once
# per machine.
#
# Environment:
#   FIREDRILL_CACHE         cache root (default: ${XDG_CACHE_HOME:-~/.cache}/firedrill)
#   FIREDRILL_TESTBED_DATAPLANE=0      no data plane (the scale benchmark)
#   FIREDRILL_TESTBED_KWOK_PARALLELISM KWOK workers per stage kind (default 4)
#   FIREDRILL_TESTBED_DIR   state directory: certs, kubeconfig, logs, pids
#                           (default: <repo>/.testbed)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
ZONES=(zone-a zone-b zone-c)

CACHE=${FIREDRILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/firedrill}
STATE=${FIREDRILL_TESTBED_DIR:-$REPO/.testbed}

# shellcheck source=realnodes.sh
source "$HERE/realnodes.sh"

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

source_hash() {
  (cd "$HERE" && cat go.mod go.sum cmd/kube/main.go && echo "$KWOK_VERSION" && go env GOVERSION) |
    sha256sum | cut -c1-12
}

bin_dir() {
  echo "$CACHE/testbed/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-$(source_hash)/bin"
}

cmd_build() {
  local bin; bin=$(bin_dir)
  if [[ -x $bin/kube && -x $bin/kwok ]]; then
    echo "$bin"; return 0
  fi
  command -v go >/dev/null || die "go is not installed; the testbed is built from Go modules"
  local tmp="$bin.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local start=$SECONDS
  local ldflags="-s -w"
  local major=${K8S_VERSION#v}; major=${major%%.*}
  local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
  done
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kubelet, kube-proxy ($K8S_VERSION, etcd $ETCD_VERSION): one multi-call binary; a cold build takes a while"
  (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$tmp/kube" ./cmd/kube) ||
    die "building the control plane from k8s.io/kubernetes@$K8S_VERSION failed (see the Go errors above)"
  log "building kwok $KWOK_VERSION"
  (cd "$HERE/kwok" && CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") ||
    die "building sigs.k8s.io/kwok@$KWOK_VERSION failed (see the Go errors above)"
  for p in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kubelet kube-proxy; do
    ln -sf kube "$tmp/$p"
  done
  rm -rf "$bin"; mkdir -p "$(dirname "$bin")"; mv "$tmp" "$bin"
  log "built in $((SECONDS - start))s into $bin"
  echo "$bin"
}

# helm, in a cache of its own so that its version does not invalidate the control plane's.
cmd_helm() {
  local dir="$CACHE/tools/helm-$HELM_VERSION-$(go env GOVERSION)"
  if [[ ! -x $dir/helm ]]; then
    log "building helm $HELM_VERSION from helm.sh/helm/v3"
    mkdir -p "$dir.tmp.$$"
    (cd "$HERE/kwok" && CGO_ENABLED=0 GOBIN="$dir.tmp.$$" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION") ||
      die "building helm.sh/helm/v3@$HELM_VERSION failed (see the Go errors above)"
    rm -rf "$dir"; mv "$dir.tmp.$$" "$dir"
  fi
  echo "$dir/helm"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# PID files hold "PID START": the process's start time (field 22 of
# /proc/PID/stat) guards against signalling an unrelated process that took
# over the number after ours ended.
# A process's start time (empty, and no failure, once it is gone: under
# pipefail a child that exits between `pgrep` and here would otherwise end
# the whole script, silently, halfway through `down`).
proc_start() { { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null || true; } | awk '{print $20}'; }
record_pid() { echo "$2 $(proc_start "$2")" >"$1"; } # file pid
pid_of() { # file -> the PID, if that process is still the one recorded
  [[ -f $1 ]] || return 1
  local pid start
  read -r pid start <"$1" || true
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ -z $start || $(proc_start "$pid") == "$start" ]] || return 1
  echo "$pid"
}
pid_alive() { pid_of "$1" >/dev/null; }

# start NAME CMD...: run in the background, record its PID, log to NAME.log
start() {
  local name=$1; shift
  "$@" >>"$STATE/logs/$name.log" 2>&1 &
  record_pid "$STATE/pids/$name" $!
}

gen_certs() {
  local d=$STATE/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=firedrill-testbed-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  cat >"$d/apiserver.ext" <<EOF
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
  cert() { # name subject extfile
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 30 -out "$d/$1.crt" -extfile "$3" 2>/dev/null
  }
  echo "extendedKeyUsage=clientAuth" >"$d/client.ext"
  cert apiserver "/CN=kube-apiserver" "$d/apiserver.ext"
  cert admin "/O=system:masters/CN=firedrill-admin" "$d/client.ext"
  cert controller-manager "/CN=system:kube-controller-manager" "$d/client.ext"
  cert scheduler "/CN=system:kube-scheduler" "$d/client.ext"
  # KWOK has a name of its own, so that a policy can refuse its heartbeats
  # for a node without power (below).
  cert kwok "/O=system:masters/CN=testbed-kwok" "$d/client.ext"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

# KWOK's own stage definitions (node ready + lease heartbeat; pod ready,
# complete, delete), read from the kwok module this testbed was built from,
# with three changes:
# - a pod may ask for a start-up time with the annotation KWOK's general
#   stages use (pod-ready.stage.kwok.x-k8s.io/delay); without it, Ready is at once;
# - a Running pod that lost its Ready condition (its node lost power and came
#   back) is made Ready again, as a kubelet would (keeping its IP);
# - a pod labelled testbed.firedrill.dev/serve=true only becomes Running (with
#   its IP): the data plane starts its process and makes it Ready once the
#   process answers;
# - nothing is done for a node or pod the data plane marked powered off
#   (testbed.firedrill.dev/powered-off): no re-initialising the node, no
#   making its pods Ready, no finishing their deletion (it stays Terminating).
kwok_stages() {
  local dir
  dir=$(cd "$HERE/kwok" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  python3 - "$dir/kustomize/stage" <<'PY'
import sys
base = sys.argv[1]
def read(f):
    return open(f"{base}/{f}").read()
def must(s, old, new):
    assert old in s, f"the KWOK stage changed: {old!r} not found"
    return s.replace(old, new, 1)
SERVE = '.metadata.labels["testbed.firedrill.dev/serve"]'
OFF = '.metadata.annotations["testbed.firedrill.dev/powered-off"]'
def powered(s):
    return must(s, "    matchExpressions:\n", f"    matchExpressions:\n    - key: '{OFF}'\n      operator: 'DoesNotExist'\n")
out = [powered(read(f)) for f in ["node/fast/node-initialize.yaml",
                                  "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
                                  "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"]]
ready = powered(read("pod/fast/pod-ready.yaml"))
plain = must(ready, "  next:\n", "  delay:\n    durationMilliseconds: 0\n    durationFrom:\n"
             "      expressionFrom: '.metadata.annotations[\"pod-ready.stage.kwok.x-k8s.io/delay\"]'\n  next:\n")
plain = must(plain, "    matchExpressions:\n", f"    matchExpressions:\n    - key: '{SERVE}'\n      operator: 'DoesNotExist'\n")
served = must(ready, "name: pod-ready", "name: pod-start-served")
served = must(served, "    matchExpressions:\n", f"    matchExpressions:\n    - key: '{SERVE}'\n      operator: 'In'\n      values:\n      - 'true'\n")
served = must(served, 'status: "True"\n        type: Ready', 'status: "False"\n        type: Ready')
served = must(served, 'status: "True"\n        type: ContainersReady', 'status: "False"\n        type: ContainersReady')
served = must(served, "ready: true\n        restartCount: 0\n        state:\n          running", "ready: false\n        restartCount: 0\n        state:\n          running")
# A Running pod that lost Ready (its node lost power and came back) is made
# Ready again as a kubelet would, keeping its IP (the ready stage would
# allocate a new one).
again = f"""apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready-again
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '{SERVE}'
      operator: 'DoesNotExist'
    - key: '{OFF}'
      operator: 'DoesNotExist'
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values:
      - 'True'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: ContainersReady
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: PodScheduled
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
"""
out += [plain, served, again]
for doc in out:
    print("---")
    print(doc)
PY
}

kubeconfig() { # name -> $STATE/name.kubeconfig
  cat >"$STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: firedrill-testbed
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $STATE/pki/$1.crt
    client-key: $STATE/pki/$1.key
contexts:
- name: firedrill-testbed
  context:
    cluster: firedrill-testbed
    user: $1
current-context: firedrill-testbed
EOF
}

wait_for() { # description timeout-seconds command...
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what; last log lines:"
      for f in "$STATE"/logs/*.log; do echo "== $f"; tail -n 15 "$f"; done >&2
      return 1
    fi
    for f in "$STATE"/pids/*; do
      pid_alive "$f" || { log "$(basename "$f") exited while waiting for $what:"; tail -n 30 "$STATE/logs/$(basename "$f").log" >&2; return 1; }
    done
    sleep 0.5
  done
}

cmd_up() {
  local nodes=6 real=0
  while (($#)); do
    case $1 in
      --real) real=${2:?--real needs a count}; shift 2 ;;
      *) nodes=$1; shift ;;
    esac
  done
  if ((real > 0)); then
    [[ $(id -u) -eq 0 ]] || die "real nodes need root (network, mount and PID namespaces, cgroups)"
    local t; for t in containerd runc socat nsenter unshare ctr; do command -v "$t" >/dev/null || die "$t is missing (run tests/deps.sh)"; done
    [[ -x /usr/lib/cni/bridge ]] || die "the CNI plugins are missing (run tests/deps.sh)"
  fi
  if [[ -d $STATE/pids ]] && compgen -G "$STATE/pids/*" >/dev/null; then
    for f in "$STATE"/pids/*; do
      pid_alive "$f" && die "a testbed is already running from $STATE (run: $0 down)"
    done
  fi
  local bin; bin=$(cmd_build)
  local kit=
  ((real > 0)) && kit=$(real_kit)
  local t0=$SECONDS
  rm -rf "$STATE"; mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/etcd"
  # If anything below fails, stop what was started.
  # `die` and a failing command (set -e, also inside functions) both end
  # the script, so the EXIT trap sees every failure.
  trap 'log "start-up failed; stopping"; cmd_down' EXIT
  gen_certs
  local etcd_port etcd_peer
  etcd_port=$(free_port); etcd_peer=$(free_port)
  APISERVER_PORT=$(free_port)
  echo "$APISERVER_PORT" >"$STATE/apiserver.port"
  for u in admin controller-manager scheduler kwok; do kubeconfig $u; done

  start etcd "$bin/etcd" --name=testbed --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="testbed=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --quota-backend-bytes=8589934592 \
    --log-level=warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"

  cat >"$STATE/apiserver.args" <<EOF
--etcd-servers=http://127.0.0.1:$etcd_port
--bind-address=127.0.0.1
--advertise-address=127.0.0.1
--secure-port=$APISERVER_PORT
--tls-cert-file=$STATE/pki/apiserver.crt
--tls-private-key-file=$STATE/pki/apiserver.key
--client-ca-file=$STATE/pki/ca.crt
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$STATE/pki/sa.pub
--service-account-signing-key-file=$STATE/pki/sa.key
--service-cluster-ip-range=10.96.0.0/16
--authorization-mode=Node,RBAC
--endpoint-reconciler-type=none
--allow-privileged=true
--max-requests-inflight=1000
--max-mutating-requests-inflight=500
EOF
  ((real > 0)) && real_before_apiserver "$real" "$kit"
  start_apiserver "$bin"
  wait_for kube-apiserver 120 "$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig" get --raw /readyz

  start_controllers "$bin"
  # A node without power renews no Lease: the data plane labels the Lease,
  # and this policy refuses every renewal of a Lease that keeps the label.
  "$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig" apply -f - >/dev/null <<'EOF'
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: testbed-powered-off-leases}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [coordination.k8s.io], apiVersions: [v1], operations: [UPDATE], resources: [leases]}
  validations:
  - expression: >-
      !has(oldObject.metadata.labels) || !('testbed.firedrill.dev/powered-off' in oldObject.metadata.labels) ||
      !has(object.metadata.labels) || !('testbed.firedrill.dev/powered-off' in object.metadata.labels) ||
      object.spec == oldObject.spec
    message: the node has no power (testbed power loss)
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: testbed-powered-off-leases}
spec:
  policyName: testbed-powered-off-leases
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-node-lease}}
---
# Nor does it report status. KWOK's node heartbeat stage fires up to ~20
# minutes after it was scheduled, without looking at the node again: one
# that lands during a cut would report the dark node Ready and keep the node
# lifecycle controller from ever marking it NotReady.
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: testbed-powered-off-nodes}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [nodes/status]}
  validations:
  - expression: >-
      request.userInfo.username != 'testbed-kwok' ||
      !has(oldObject.metadata.annotations) || !('testbed.firedrill.dev/powered-off' in oldObject.metadata.annotations)
    message: the node has no power (testbed power loss)
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: testbed-powered-off-nodes}
spec:
  policyName: testbed-powered-off-nodes
  validationActions: [Deny]
EOF
  kwok_stages >"$STATE/kwok.yaml"
  # Large testbeds (the scale benchmark): more KWOK workers for pod and node
  # stages and leases (KWOK's default is 4 each).
  if [[ -n ${FIREDRILL_TESTBED_KWOK_PARALLELISM:-} ]]; then
    cat >>"$STATE/kwok.yaml" <<EOF
---
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  podPlayStageParallelism: $FIREDRILL_TESTBED_KWOK_PARALLELISM
  nodePlayStageParallelism: $FIREDRILL_TESTBED_KWOK_PARALLELISM
  nodeLeaseParallelism: $FIREDRILL_TESTBED_KWOK_PARALLELISM
EOF
  fi
  start kwok "$bin/kwok" --kubeconfig="$STATE/kwok.kubeconfig" --config="$STATE/kwok.yaml" \
    --node-lease-duration-seconds=40 \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector= --manage-single-node= \
    --cidr=10.244.0.0/16 --node-ip=127.0.0.1 --server-address="127.0.0.1:$(free_port)"
  local k=("$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig")
  wait_for "the default service account (controller-manager)" 120 "${k[@]}" -n default get serviceaccount default
  # The stand-in data plane dials pods from the machine's own namespace:
  # not with real nodes, whose kube-proxy and containers are the real thing.
  local dataplane=${FIREDRILL_TESTBED_DATAPLANE:-1}
  ((real > 0)) && dataplane=${FIREDRILL_TESTBED_DATAPLANE:-0}
  if [[ $dataplane != 0 ]]; then
    # FIREDRILL_DATAPLANE_LOG: its log filter (e.g. info,kube_runtime=debug to see its watches retry).
    local dp slot; dp=$(dataplane_bin); slot=$(take_slot)
    start dataplane env KUBECONFIG="$STATE/admin.kubeconfig" RUST_LOG=${FIREDRILL_DATAPLANE_LOG:-info} "$dp" dataplane --state "$STATE" --slot "$slot"
    wait_for "the data plane's hosts file" 60 test -f "$STATE/hosts"
  fi

  ((nodes > 0)) && cmd_nodes "$nodes" 0
  ((real > 0)) && real_after_apiserver "$real" "$kit" "$bin"
  ((real > 0)) && { real_sysctls_unchanged || die "the real nodes changed the machine's sysctls"; }
  trap - EXIT
  log "up in $((SECONDS - t0))s: https://127.0.0.1:$APISERVER_PORT, $nodes fake and $real real nodes in ${ZONES[*]}"
  log "use it with: eval \"\$($0 env)\""
}

# The data plane (tests/testbed/dataplane): processes for pods that ask for
# one, a proxy per Service, power loss for fake nodes. Built with cargo, into
# the same target directory as the rest of the workspace.
dataplane_bin() {
  command -v cargo >/dev/null || die "cargo is not installed; the testbed's data plane is built with it"
  (cd "$REPO" && cargo build -q -p firedrill-testbed) >&2 || die "building the data plane failed"
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  # A copy of its own: a later build must not replace the binary under a
  # running data plane, which starts the pods' processes from it.
  mkdir -p "$STATE/bin"
  cp "$target/debug/firedrill-testbed" "$STATE/bin/firedrill-testbed"
  echo "$STATE/bin/firedrill-testbed"
}

# Each testbed's data plane serves its addresses on a loopback range of its
# own (slot N: 127.2N.x.y for pods, 127.2N+1.x.y for Services), so two
# testbeds on one machine never collide. A slot is a directory under
# /tmp/firedrill-testbed-slots, taken with mkdir (atomic) and freed by
# `down`; a slot whose testbed is no longer running is taken over.
SLOTS=/tmp/firedrill-testbed-slots
take_slot() {
  mkdir -p "$SLOTS"
  local n owner pid
  for n in $(seq 1 60); do
    if ! mkdir "$SLOTS/$n" 2>/dev/null; then
      owner=$(cat "$SLOTS/$n/state" 2>/dev/null || true)
      # Just taken by another `up` that has not written its state yet.
      [[ -n $owner ]] || continue
      # In use by a running testbed.
      pid_alive "$owner/pids/dataplane" && continue
    fi
    echo "$STATE" >"$SLOTS/$n/state"
    echo "$n" >"$STATE/slot"
    echo "$n"
    return 0
  done
  die "no free data-plane slot under $SLOTS"
}

free_slot() {
  [[ -f $STATE/slot ]] || return 0
  local n; n=$(cat "$STATE/slot")
  [[ $(cat "$SLOTS/$n/state" 2>/dev/null) == "$STATE" ]] && rm -rf "${SLOTS:?}/$n"
  rm -f "$STATE/slot"
}

# The apiserver's flags are kept in the state directory, so that it can be
# stopped and started again exactly as it was.
start_apiserver() {
  local bin=$1 args=()
  mapfile -t args <"$STATE/apiserver.args"
  "$bin/kube-apiserver" "${args[@]}" >>"$STATE/logs/kube-apiserver.log" 2>&1 &
  record_pid "$STATE/pids/kube-apiserver" $!
}

stop_pid_file() { # file: SIGTERM, then SIGKILL after 5 s; its children too
  local f=$1 pid
  [[ -f $f ]] || return 0
  if pid=$(pid_of "$f"); then
    # Taken before the parent goes: a forking relay's connection handlers
    # (socat fork) would otherwise live on, adopted by init.
    local k kids=() starts=()
    for k in $(pgrep -P "$pid" || true); do kids+=("$k"); starts+=("$(proc_start "$k")"); done
    kill "$pid" "${kids[@]}" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true # a paused process (etcd pause) handles SIGTERM only once resumed
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    for k in "${!kids[@]}"; do # only a child that is still the one seen
      [[ $(proc_start "${kids[$k]}") == "${starts[$k]}" ]] && kill -9 "${kids[$k]}" 2>/dev/null || true
    done
  fi
  rm -f "$f"
}

# kube-controller-manager and kube-scheduler (logs appended across restarts).
start_controllers() {
  local bin=$1
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --root-ca-file="$STATE/pki/ca.crt" --service-account-private-key-file="$STATE/pki/sa.key" \
    --use-service-account-credentials=true --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$(free_port)" \
    --kube-api-qps=500 --kube-api-burst=1000 --concurrent-replicaset-syncs=10 \
    --concurrent-deployment-syncs=10 --concurrent-endpoint-syncs=10 --concurrent-service-endpoint-syncs=10
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$(free_port)" \
    --kube-api-qps=500 --kube-api-burst=1000
}

cmd_apiserver() {
  [[ -f $STATE/apiserver.args ]] || die "no testbed in $STATE (run: $0 up)"
  local bin; bin=$(bin_dir)
  case ${1:-} in
    stop)
      stop_pid_file "$STATE/pids/kube-apiserver"
      log "kube-apiserver stopped"
      ;;
    start)
      pid_alive "$STATE/pids/kube-apiserver" && die "kube-apiserver is already running"
      start_apiserver "$bin"
      wait_for kube-apiserver 120 "$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig" get --raw /readyz
      # The controllers' informers came back stale after an outage here (a
      # watch refused while RBAC was not yet served left EndpointSlices
      # unreconciled for minutes): start them afresh, as a control plane
      # restarted with its API server would be.
      for name in kube-scheduler kube-controller-manager; do stop_pid_file "$STATE/pids/$name"; done
      start_controllers "$bin"
      log "kube-apiserver started (controllers restarted)"
      ;;
    *) die "usage: $0 apiserver stop|start" ;;
  esac
}

cmd_etcd() {
  local pid
  pid=$(pid_of "$STATE/pids/etcd") || die "no etcd running in $STATE (run: $0 up)"
  case ${1:-} in
    pause) kill -STOP "$pid"; log "etcd paused (SIGSTOP)" ;;
    resume) kill -CONT "$pid"; log "etcd resumed (SIGCONT)" ;;
    *) die "usage: $0 etcd pause|resume" ;;
  esac
}

cmd_nodes() {
  local n=$1 first=${2:-}
  local bin; bin=$(bin_dir)
  local k=("$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig")
  if [[ -z $first ]]; then first=$("${k[@]}" get nodes -o name | wc -l); fi
  local f=$STATE/nodes-$first.yaml
  : >"$f"
  local i zone host
  for ((i = first; i < first + n; i++)); do
    zone=${ZONES[$((i % ${#ZONES[@]}))]}
    host=$(printf 'node-%s-%04d' "$zone" "$i")
    cat >>"$f" <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $host
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $host
    topology.kubernetes.io/zone: $zone
    topology.kubernetes.io/region: testbed
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
EOF
  done
  "${k[@]}" apply --server-side -f "$f" >/dev/null
  wait_for "$n nodes to be Ready" 300 nodes_ready "$((first + n))"
}

nodes_ready() {
  local want=$1 bin; bin=$(bin_dir)
  local ready
  ready=$("$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig" get nodes \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  ((ready >= want))
}

cmd_down() {
  [[ -d $STATE/pids ]] || return 0
  # Real nodes first, while the API server still runs.
  real_down
  # Reverse start order: kwok and the controllers before the apiserver, etcd last.
  for name in dataplane kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_pid_file "$STATE/pids/$name"
  done
  free_slot
  log "stopped"
  [[ -z ${REAL_DOWN_FAILED:-} ]] || die "the machine's sysctls had changed (written back; see above)"
}

cmd_status() {
  [[ -d $STATE/pids ]] || { echo "not running"; return 1; }
  local f rc=0 n=0
  for f in "$STATE"/pids/*; do
    [[ -f $f ]] || continue
    n=$((n + 1))
    if pid_alive "$f"; then echo "$(basename "$f"): running (pid $(pid_of "$f"))"; else echo "$(basename "$f"): dead"; rc=1; fi
  done
  ((n > 0)) || { echo "not running"; return 1; }
  return $rc
}

cmd_env() {
  [[ -f $STATE/admin.kubeconfig ]] || die "no testbed in $STATE (run: $0 up)"
  echo "export KUBECONFIG=$STATE/admin.kubeconfig"
  echo "export PATH=$(bin_dir):\$PATH"
  # firedrill's probes reach Services by name through the data plane's hosts file.
  [[ -f $STATE/hosts ]] && echo "export FIREDRILL_PROBE_HOSTS=$STATE/hosts"
  return 0
}

case ${1:-} in
  build) cmd_build ;;
  up) shift; cmd_up "$@" ;;
  nodes) shift; cmd_nodes "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  helm) cmd_helm ;;
  import) shift; cmd_import "$@" ;;
  apiserver) shift; cmd_apiserver "$@" ;;
  etcd) shift; cmd_etcd "$@" ;;
  *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
