# Real nodes for the testbed (sourced by testbed.sh; `testbed.sh up N --real M`).
#
# Each real node is a kubelet, a containerd (with runc and the CNI bridge
# plugin) and a kube-proxy, sharing three namespaces of their own:
# - a network namespace, whose eth0 is one end of a veth to the bridge in
#   the testbed's `lab` namespace (10.77.0.0/24; the node is 10.77.0.(10+i),
#   its pods 10.245.i.0/24);
# - a PID namespace, so that a pod with hostPID (the firedrill agent) sees the
#   node's own init as PID 1, and /proc/1/ns/net is the node's network, never
#   the machine's; stopping the init stops everything of the node;
# - a mount namespace, in which the node's own directories are bound over
#   /run/containerd, /run/netns, /var/lib/cni, /var/lib/kubelet, /var/log/pods
#   and /var/log/containers, and small files over three sysctls (below).
#
# Addresses: nothing in the machine's own network namespace is given, listens
# on or dials a private address. Everything reaches the API server at
# https://10.77.0.1:443 (the lab bridge, TLS name `kubernetes`), a relay in
# the lab namespace that forwards over a unix socket to a relay in the
# machine's namespace that dials the API server on loopback. The API server
# reaches the kubelets (logs, exec) through its egress selector: an HTTP
# CONNECT proxy on a unix socket, running in the lab namespace, that dials
# only the node subnet. The `kubernetes` Service's endpoint is the lab
# relay, so pods reach the API server at 10.96.0.1:443 through kube-proxy.
#
# Sysctls: kubelet wants kernel.panic=10, kernel.panic_on_oops=1 and
# vm.overcommit_memory=1 and, unless protectKernelDefaults is on, writes them
# into the kernel, which is the whole machine's. The node's mount namespace
# has files with those values bound over the three /proc/sys entries, and
# protectKernelDefaults is on, so kubelet only reads them. `up` and `down`
# check that the machine's values never change.

REAL_LAB=10.77.0
REAL_PODS=10.245
REAL_IMAGE_PAUSE=localhost/testbed/pause:1
REAL_IMAGE_SERVE=localhost/testbed/serve:1
REAL_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory)

# A short name of this testbed's, for its network namespaces (two testbeds
# on one machine never share one).
real_id() { printf '%s' "$STATE" | sha256sum | cut -c1-6; }
real_lab_ns() { echo "fd$(real_id)-lab"; }
real_node_ns() { echo "fd$(real_id)-n$1"; }
real_node_name() { echo "real-${ZONES[$(($1 % ${#ZONES[@]}))]}-$1"; }

real_sysctls() { sysctl -n "${REAL_SYSCTLS[@]}" | tr '\n' ' '; }

# The machine's sysctls as they were before the real nodes started; if
# anything changed them, write the old values back and fail (a kubelet that
# set kernel.panic_on_oops=1 here would turn the next oops into a reboot).
real_sysctls_unchanged() {
  [[ -f $STATE/real/sysctls.before ]] || return 0
  local before now i
  before=$(cat "$STATE/real/sysctls.before"); now=$(real_sysctls)
  [[ $now == "$before" ]] && return 0
  log "error: the machine's sysctls changed: $before-> $now (${REAL_SYSCTLS[*]}); writing the old values back"
  read -r -a old <<<"$before"
  for i in "${!REAL_SYSCTLS[@]}"; do sysctl -q -w "${REAL_SYSCTLS[$i]}=${old[$i]}" || true; done
  return 1
}

# The small static programs of the real nodes' images (pause, serve) and the
# API server's CONNECT proxy, and the images, cached by the sources' hash.
real_kit() {
  local hash dir
  hash=$( (cd "$HERE" && cat cmd/nodekit/main.go realimage.py && go env GOVERSION) | sha256sum | cut -c1-12)
  dir=$CACHE/testbed/nodekit-$hash
  if [[ ! -f $dir/serve.oci.tar ]]; then
    rm -rf "$dir.tmp.$$"; mkdir -p "$dir.tmp.$$"
    (cd "$HERE" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dir.tmp.$$/nodekit" ./cmd/nodekit) >&2 ||
      die "building cmd/nodekit failed"
    python3 "$HERE/realimage.py" --binary "$dir.tmp.$$/nodekit" --name "$REAL_IMAGE_PAUSE" --cmd pause --out "$dir.tmp.$$/pause.oci.tar" >/dev/null
    python3 "$HERE/realimage.py" --binary "$dir.tmp.$$/nodekit" --name "$REAL_IMAGE_SERVE" --cmd serve --out "$dir.tmp.$$/serve.oci.tar" >/dev/null
    rm -rf "$dir"; mv "$dir.tmp.$$" "$dir"
  fi
  echo "$dir"
}

real_cert() { # name subject
  local d=$STATE/pki
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
  openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -out "$d/$1.crt" -extfile "$d/client.ext" 2>/dev/null
}

# The kubeconfig of a node's component: the API server through the lab relay.
real_kubeconfig() { # user file
  cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: firedrill-testbed
  cluster:
    server: https://$REAL_LAB.1:443
    tls-server-name: kubernetes
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $STATE/pki/$1.crt
    client-key: $STATE/pki/$1.key
contexts:
- name: firedrill-testbed
  context: {cluster: firedrill-testbed, user: $1}
current-context: firedrill-testbed
EOF
}

# Before the API server starts: the lab network, its relays and the CONNECT
# proxy, and the API server's flags for them.
real_before_apiserver() {
  local n=$1 kit=$2 lab; lab=$(real_lab_ns)
  mkdir -p "$STATE/real"
  echo "$(real_sysctls)" >"$STATE/real/sysctls.before"
  ip netns add "$lab"
  echo "$lab" >>"$STATE/real/netns"
  ip -n "$lab" link set lo up
  ip -n "$lab" link add br0 type bridge
  ip -n "$lab" addr add "$REAL_LAB.1/24" dev br0
  ip -n "$lab" link set br0 up
  # Relays: lab 10.77.0.1:443 -> unix socket -> loopback API server.
  start real-relay socat "UNIX-LISTEN:$STATE/real/apiserver.sock,fork,mode=600" "TCP:127.0.0.1:$APISERVER_PORT"
  start real-relay-lab nsenter --net="/run/netns/$lab" \
    socat "TCP-LISTEN:443,bind=$REAL_LAB.1,fork,reuseaddr" "UNIX-CONNECT:$STATE/real/apiserver.sock"
  start real-connect nsenter --net="/run/netns/$lab" \
    "$kit/nodekit" connect -listen "$STATE/real/connect.sock" -allow "$REAL_LAB.0/24"
  cat >"$STATE/real/egress.yaml" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: $STATE/real/connect.sock
EOF
  cat >>"$STATE/apiserver.args" <<EOF
--egress-selector-config-file=$STATE/real/egress.yaml
--kubelet-client-certificate=$STATE/pki/admin.crt
--kubelet-client-key=$STATE/pki/admin.key
--kubelet-preferred-address-types=InternalIP
EOF
  real_cert kube-proxy "/CN=system:kube-proxy"
  local i
  for ((i = 0; i < n; i++)); do
    real_cert "node-$i" "/O=system:nodes/CN=system:node:$(real_node_name "$i")"
  done
}

# After the API server is up: the `kubernetes` Service's endpoint (the lab
# relay; the API server runs with --endpoint-reconciler-type=none), then
# the nodes, and wait until they are Ready.
real_after_apiserver() {
  local n=$1 kit=$2 bin=$3
  local k=("$bin/kubectl" --kubeconfig="$STATE/admin.kubeconfig")
  # (Quiet unless it fails: kubectl warns that v1 Endpoints is deprecated,
  # which older clients still read.)
  local out
  out=$("${k[@]}" apply -f - 2>&1 <<EOF
apiVersion: v1
kind: Endpoints
metadata:
  name: kubernetes
  namespace: default
  labels: {endpointslice.kubernetes.io/skip-mirror: "true"}
subsets:
- addresses: [{ip: $REAL_LAB.1}]
  ports: [{name: https, port: 443, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: testbed.firedrill.dev}
addressType: IPv4
endpoints: [{addresses: [$REAL_LAB.1], conditions: {ready: true}}]
ports: [{name: https, port: 443, protocol: TCP}]
EOF
) || die "the kubernetes Service's endpoints: $out"
  real_kubeconfig kube-proxy "$STATE/real/kube-proxy.kubeconfig"
  local i
  for ((i = 0; i < n; i++)); do real_node_up "$i" "$n" "$kit" "$bin"; done
  local names=() want
  for ((i = 0; i < n; i++)); do names+=("$(real_node_name "$i")"); done
  want=$(printf '%s\n' "${names[@]}")
  wait_for "$n real nodes to be Ready" 180 real_nodes_ready "${k[@]}" -- "${names[@]}"
  log "real nodes Ready: $(echo "$want" | tr '\n' ' ')"
}

real_nodes_ready() { # kubectl... -- names...
  local k=() name status
  while [[ $1 != -- ]]; do k+=("$1"); shift; done
  shift
  for name in "$@"; do
    status=$("${k[@]}" get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || return 1
    [[ $status == True ]] || return 1
  done
}

real_node_up() { # index count kit bin
  local i=$1 n=$2 kit=$3 bin=$4
  local name ns lab zone d addr j
  name=$(real_node_name "$i"); ns=$(real_node_ns "$i"); lab=$(real_lab_ns)
  zone=${ZONES[$((i % ${#ZONES[@]}))]}
  d=$STATE/real/$name; addr=$REAL_LAB.$((10 + i))
  mkdir -p "$d"/{fs,cni,sysctl,containerd/root,containerd/state,opt}
  echo "$name $ns $d/containerd.sock $addr $zone" >>"$STATE/real/nodes"

  # Network: eth0 on the lab bridge (the veth is made inside lab and moved
  # straight into the node, so it never exists in the machine's namespace).
  ip netns add "$ns"
  echo "$ns" >>"$STATE/real/netns"
  ip -n "$lab" link add "v$i" type veth peer name eth0 netns "$ns"
  ip -n "$lab" link set "v$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$REAL_LAB.1"
  ip -n "$lab" route add "$REAL_PODS.$i.0/24" via "$addr"
  for ((j = 0; j < n; j++)); do
    ((j == i)) || ip -n "$ns" route add "$REAL_PODS.$j.0/24" via "$REAL_LAB.$((10 + j))"
  done

  # cgroups v1: one group per controller, the node's kubelet's cgroupRoot.
  local c
  # (kubelet also makes its groups in the hybrid layout's unified tree.)
  for c in cpu cpuacct cpuset memory devices freezer blkio pids systemd unified; do
    [[ -d /sys/fs/cgroup/$c ]] || continue
    mkdir -p "/sys/fs/cgroup/$c/$name"
    echo "/sys/fs/cgroup/$c/$name" >>"$STATE/real/cgroups"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$name/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$name/cpuset.mems"

  # What kubelet reads as the kernel's defaults (bound over /proc/sys inside).
  echo 10 >"$d/sysctl/panic"; echo 1 >"$d/sysctl/panic_on_oops"; echo 1 >"$d/sysctl/overcommit_memory"

  cat >"$d/cni/10-testbed.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "testbed", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$REAL_PODS.$i.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
  cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REAL_IMAGE_PAUSE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
EOF
  real_kubeconfig "node-$i" "$d/kubelet.kubeconfig"
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: AlwaysAllow}
address: $addr
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /$name
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: true
containerRuntimeEndpoint: unix://$d/containerd.sock
resolvConf: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/real/kube-proxy.kubeconfig}
mode: nftables
hostnameOverride: $name
clusterCIDR: $REAL_PODS.0.0/16
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the kernel's conntrack settings alone (some are the machine's).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  # The node's mount points, made where missing (and removed by `down`).
  local m
  for m in /run/containerd /run/netns /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers; do
    if [[ ! -d $m ]]; then mkdir -p "$m"; echo "$m" >>"$STATE/real/mountpoints"; fi
  done
  cat >"$d/init.sh" <<EOF
#!/usr/bin/env bash
# The node's init (PID 1 of its PID namespace): its mounts, then containerd,
# kubelet and kube-proxy; when one of them ends, the node ends.
set -euo pipefail
for m in /run/containerd /run/netns /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers; do
  mkdir -p "$d/fs\$m"; mount --bind "$d/fs\$m" "\$m"
done
mount --bind "$d/sysctl/panic" /proc/sys/kernel/panic
mount --bind "$d/sysctl/panic_on_oops" /proc/sys/kernel/panic_on_oops
mount --bind "$d/sysctl/overcommit_memory" /proc/sys/vm/overcommit_memory
[[ "\$(cat /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops /proc/sys/vm/overcommit_memory | tr '\n' ' ')" == "10 1 1 " ]] ||
  { echo "the sysctl files are not in place; not starting kubelet" >&2; exit 1; }
containerd --config "$d/containerd.toml" >"$STATE/logs/$name-containerd.log" 2>&1 &
for _ in \$(seq 1 100); do [[ -S "$d/containerd.sock" ]] && break; sleep 0.1; done
{ echo "$kit/pause.oci.tar"; echo "$kit/serve.oci.tar"; cat "$STATE/real/images" 2>/dev/null || true; } |
  while read -r a b; do
    ctr -a "$d/containerd.sock" -n k8s.io images import --all-platforms \${b:+--base-name="\$b"} "\$a" >/dev/null
  done
"$bin/kubelet" --config="$d/kubelet.yaml" --kubeconfig="$d/kubelet.kubeconfig" \\
  --hostname-override=$name --node-ip=$addr \\
  --node-labels=topology.kubernetes.io/zone=$zone,topology.kubernetes.io/region=testbed,type=real \\
  >"$STATE/logs/$name-kubelet.log" 2>&1 &
"$bin/kube-proxy" --config="$d/kube-proxy.yaml" >"$STATE/logs/$name-kube-proxy.log" 2>&1 &
wait -n
echo "a component of $name ended; the node stops" >&2
exit 1
EOF
  chmod +x "$d/init.sh"
  start "real-node-$i" nsenter --net="/run/netns/$ns" \
    unshare --mount --propagation private --pid --fork --kill-child --mount-proc "$d/init.sh"
}

# `testbed.sh import ARCHIVE [BASE-NAME]`: an OCI archive into every real
# node's containerd (and into nodes started later).
cmd_import() {
  local archive=$1 base=${2:-}
  [[ -f $archive ]] || die "no such archive: $archive"
  [[ -f $STATE/real/nodes ]] || die "no real nodes in $STATE (run: $0 up N --real M)"
  archive=$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")
  echo "$archive $base" >>"$STATE/real/images"
  local name ns sock rest
  while read -r name ns sock rest; do
    # shellcheck disable=SC2086
    ctr -a "$sock" -n k8s.io images import --all-platforms ${base:+--base-name="$base"} "$archive" >/dev/null ||
      die "importing $archive into $name failed"
  done <"$STATE/real/nodes"
  log "imported $(basename "$archive") into the real nodes"
}

# Stop the real nodes and remove everything they made: processes (by the
# PID files; each node's init takes its whole PID namespace with it),
# cgroups, network namespaces (with their veths and nft tables), the mount
# points made for them. Safe to run after a failed or partial `up`.
real_down() {
  [[ -d $STATE/real ]] || return 0
  local f init
  # The node's init is the child of `unshare` (which ignores SIGTERM while
  # it waits); SIGKILL to an init ends every process of its PID namespace.
  for f in "$STATE"/pids/real-node-*; do
    [[ -f $f ]] || continue
    local unshare
    unshare=$(pid_of "$f") || continue
    for init in $(pgrep -P "$unshare" || true); do kill -KILL "$init" 2>/dev/null || true; done
  done
  for f in "$STATE"/pids/real-node-*; do [[ -f $f ]] && stop_pid_file "$f"; done
  for f in real-connect real-relay-lab real-relay; do stop_pid_file "$STATE/pids/$f"; done
  # A cgroup goes once its last task has gone; remove the deepest first.
  local cg dir
  if [[ -f $STATE/real/cgroups ]]; then
    while read -r cg; do
      [[ -d $cg ]] || continue
      for _ in $(seq 1 50); do
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $cg ]] || break
        sleep 0.1
      done
      [[ -d $cg ]] && log "warning: cgroup $cg is still there"
    done <"$STATE/real/cgroups"
    rm -f "$STATE/real/cgroups"
  fi
  local ns
  if [[ -f $STATE/real/netns ]]; then
    while read -r ns; do ip netns delete "$ns" 2>/dev/null || true; done <"$STATE/real/netns"
    rm -f "$STATE/real/netns"
  fi
  # Any left by a start-up that failed before writing its list.
  for ns in $(ip netns list | awk '{print $1}' | grep "^fd$(real_id)-" || true); do ip netns delete "$ns"; done
  if [[ -f $STATE/real/mountpoints ]]; then
    while read -r dir; do rmdir "$dir" 2>/dev/null || true; done <"$STATE/real/mountpoints"
    rm -f "$STATE/real/mountpoints"
  fi
  # `ip netns add` made /run/netns a mount point; once no namespace is left, undo it.
  if [[ -d /run/netns ]] && [[ -z $(ip netns list) ]]; then
    umount /run/netns 2>/dev/null || true
    rmdir /run/netns 2>/dev/null || true
  fi
  real_sysctls_unchanged || REAL_DOWN_FAILED=1
}
