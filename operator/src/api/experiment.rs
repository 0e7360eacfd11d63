//! `DataCenterFailure`: one rehearsal of losing a whole zone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Take every node of one zone out of service, keep it dark for `duration`
/// while measuring the SLOs, then restore exactly what was changed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "chaos.firedrill.dev",
    version = "v1alpha1",
    kind = "DataCenterFailure",
    shortname = "dcf",
    category = "chaos",
    status = "DataCenterFailureStatus",
    doc = "A rehearsal of losing one whole zone (data center), with measured SLOs.",
    selectable = ".spec.zone",
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    validation = Rule::new("self.spec == oldSelf.spec").message("spec is immutable: an experiment does what it planned; delete it and create a new one to change it")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.slos) && size(self.slos) > 0) || (has(self.faultOnly) && self.faultOnly)").message("an experiment without SLOs measures nothing: add slos, or set faultOnly: true for a drill that only takes the zone down"))]
pub struct DataCenterFailureSpec {
    /// The zone to take down: the value of `topologyKey` on its nodes.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("zone must not be blank"))]
    pub zone: String,

    /// The node label that names a node's zone: a label key
    /// (`[prefix/]name`, a DNS subdomain prefix up to 253 characters and a
    /// name up to 63).
    #[serde(default = "default_topology_key")]
    #[schemars(
        length(min = 1, max = 317),
        pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self.split('/').size() <= 2 && self.split('/')[self.split('/').size() - 1].size() <= 63 && (self.split('/').size() == 1 || self.split('/')[0].size() <= 253)").message("topologyKey must be a label key: an optional DNS-subdomain prefix of at most 253 characters, '/', and a name of at most 63"))]
    pub topology_key: String,

    /// How long the zone stays dark, e.g. `90s`, `10m`, `1h`. At least 1s, at most 24h.
    #[serde(default = "default_duration")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(Some("1s"), "24h", "duration"))]
    pub duration: String,

    /// How long every SLO probe must be healthy before the fault starts.
    #[serde(default = "default_baseline")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(None, "1h", "baseline"))]
    pub baseline: String,

    /// Keep probing this long after the zone is restored (e.g. `2m`), to see
    /// when services that never recovered while it was dark come back. The
    /// verdict is judged on the dark window only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(None, "1h", "observe"))]
    pub observe: Option<String>,

    /// What the fault does to the zone.
    #[serde(default)]
    pub fault: FaultSpec,

    /// Which pods are in scope.
    #[serde(default)]
    pub target: TargetSpec,

    /// Refusals checked before anything is touched.
    #[serde(default)]
    pub guards: GuardSpec,

    /// Labels that mark the primary (leader) of a replicated store, as
    /// `key=value`, beside those the plan knows (CloudNativePG
    /// `cnpg.io/instanceRole=primary`, Patroni/Spilo `spilo-role=master`,
    /// Redis failover `redisfailovers-role=master`): the plan names each
    /// primary in the zone, whose loss means a failover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(min = 3, max = 380), pattern(r"^[^=]+=[^=]*$"))
    )]
    pub primary_labels: Vec<String>,

    /// A drill that only takes the zone down and measures nothing: allowed
    /// without SLOs only when this is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fault_only: bool,

    /// The service-level objectives measured while the zone is dark.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new("self.all(s, !has(s.dependsOn) || s.dependsOn.all(d, d != s.name && self.exists(o, o.name == d)))").message("dependsOn must name other SLOs of this experiment"))]
    pub slos: Vec<SloSpec>,

    /// Corrections to the Service dependencies the plan reads from the
    /// workloads' own configuration (env values, args, ConfigMaps).
    #[serde(default, skip_serializing_if = "DependenciesSpec::is_empty")]
    pub dependencies: DependenciesSpec,
}

/// Edges to add to, or drop from, the discovered Service dependency graph.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DependenciesSpec {
    /// Calls the configuration does not show (an address built at run time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub add: Vec<DependencyEdge>,
    /// Names the configuration holds that are never called. `*` matches any
    /// workload or Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub drop: Vec<DependencyEdge>,
}

impl DependenciesSpec {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drop.is_empty()
    }
}

/// A workload calls a Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DependencyEdge {
    /// The calling workload, `namespace/name` (a Deployment, StatefulSet,
    /// DaemonSet or Job; `*` in `drop`).
    #[schemars(length(min = 1, max = 253))]
    pub from: String,
    /// The Service called, `namespace/name` (`*` in `drop`).
    #[schemars(length(min = 1, max = 253))]
    pub to: String,
}

pub fn default_topology_key() -> String {
    "topology.kubernetes.io/zone".into()
}
fn default_duration() -> String {
    "10m".into()
}
fn default_baseline() -> String {
    "30s".into()
}
fn yes() -> bool {
    true
}

/// What happens to the zone.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    /// `CordonAndKill` (the default): a fire, not a drain. The zone's nodes
    /// are cordoned, its pods killed with grace period 0 (PodDisruptionBudgets
    /// do not apply), and it is kept dark. `PowerLoss`: the zone's nodes lose
    /// power. The firedrill node agent cuts each node off the network (its
    /// kubelet stops heartbeating, traffic to its pods is dropped) and nothing
    /// is deleted through the API: Kubernetes' own failure handling does the
    /// rest (NotReady after node-monitor-grace-period, eviction after the
    /// pods' tolerationSeconds, StatefulSet pods stuck), and the drill
    /// measures it. Needs the agent on every node of the zone.
    #[serde(default)]
    pub mode: FaultMode,
    /// CordonAndKill: mark every node of the zone unschedulable.
    #[serde(default = "yes")]
    pub cordon: bool,
    /// CordonAndKill: delete every in-scope pod on the zone's nodes with grace period 0.
    #[serde(default = "yes")]
    pub kill_pods: bool,
    /// CordonAndKill: keep the zone dark for the whole duration: a taint
    /// owned by the experiment, and any in-scope pod that lands there anyway
    /// is killed again.
    #[serde(default = "yes")]
    pub keep_dark: bool,
}

/// How the zone goes dark.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum FaultMode {
    #[default]
    CordonAndKill,
    PowerLoss,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            mode: FaultMode::CordonAndKill,
            cordon: true,
            kill_pods: true,
            keep_dark: true,
        }
    }
}

/// Which pods on the zone's nodes are killed. Pods out of scope are spared by
/// the mechanism too: they are never killed, and no taint that would evict
/// them is put on the zone.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.includeSystemNamespaces) && self.includeSystemNamespaces) || !has(self.namespaces) || !self.namespaces.exists(n, n in ['kube-system', 'kube-public', 'kube-node-lease'])").message("namespaces lists a system namespace (kube-system, kube-public, kube-node-lease); set includeSystemNamespaces: true to target it"))]
pub struct TargetSpec {
    /// Only these namespaces (empty: every namespace but the excluded ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
    /// Never these namespaces, in addition to the system namespaces
    /// (kube-system, kube-public, kube-node-lease) and the operator's own
    /// namespace, which are always spared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub exclude_namespaces: Vec<String>,
    /// Only pods matching this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Kill DaemonSet pods too. Off by default: a DaemonSet pod belongs to its
    /// node and comes straight back, so it would be killed in a loop.
    #[serde(default)]
    pub include_daemon_sets: bool,
    /// Allow the system namespaces (kube-system, kube-public, kube-node-lease)
    /// in scope. Off by default.
    #[serde(default)]
    pub include_system_namespaces: bool,
}

/// Namespaces spared unless `includeSystemNamespaces` is set.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Refusals and brakes. Every guard is checked before any node or pod is touched.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuardSpec {
    /// Refuse when the zone has more nodes than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_nodes: Option<i32>,
    /// Refuse when the zone holds more than this share of the cluster's nodes, in percent.
    #[serde(default = "default_max_node_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub max_node_percent: i32,
    /// Refuse when the surviving zones lack the allocatable CPU or memory for the displaced pods.
    #[serde(default = "yes")]
    pub require_capacity: bool,
    /// Refuse when the operator itself would be left with no replica outside the zone.
    #[serde(default = "yes")]
    pub protect_operator: bool,
    /// Allow running while another DataCenterFailure is active.
    #[serde(default)]
    pub allow_overlap: bool,
    /// Allow a PowerLoss on a zone holding a node the API server runs on
    /// (its `kubernetes` EndpointSlice's addresses, or a `component:
    /// kube-apiserver` pod in kube-system). Refused by default: the cut would
    /// take the control plane, and with it the drill's own restore path, down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_api_server_zone: bool,
    /// Plan and check the guards only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_max_node_percent() -> i32 {
    50
}

impl Default for GuardSpec {
    fn default() -> Self {
        Self {
            max_nodes: None,
            max_node_percent: default_max_node_percent(),
            require_capacity: true,
            protect_operator: true,
            allow_overlap: false,
            allow_api_server_zone: false,
            dry_run: false,
        }
    }
}

/// One service-level objective, measured by one probe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.recoveryPointObjective) || has(self.probe.write)").message("recoveryPointObjective is measured by a write probe: set probe.write"))]
pub struct SloSpec {
    /// A short name, e.g. `authentication`. Unique within the experiment.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// A failed critical SLO fails the whole experiment.
    #[serde(default = "yes")]
    pub critical: bool,
    /// How the SLO is measured.
    pub probe: Probe,
    /// Time between probes. At least 100ms.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(Some("100ms"), "1h", "interval"))]
    pub interval: String,
    /// How long one probe may take before it counts as failed.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(Some("10ms"), "5m", "timeout"))]
    pub timeout: String,
    /// The longest acceptable time from injection until the service is healthy again for good.
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(None, "24h", "recoveryTimeObjective"))]
    pub recovery_time_objective: String,
    /// A write probe's recovery-point objective: the most time of
    /// acknowledged writes that may be lost, e.g. `0s` (none may be lost)
    /// or `5s`. Judged once every acknowledged write has been read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(None, "24h", "recoveryPointObjective"))]
    pub recovery_point_objective: Option<String>,
    /// The lowest acceptable share of successful probes while the zone is dark, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub availability_objective: Option<f64>,
    /// The largest share of the dark window, in percent, during which the
    /// probe may fail to run at all (Secret missing, Prometheus unreachable,
    /// no answer to judge) before the SLO is Inconclusive rather than judged.
    #[serde(default = "default_max_error_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_error_percent: f64,
    /// The least share of the dark window, in percent, that the probe's
    /// samples must cover before the SLO is judged. Time no sample stands
    /// for (the operator stopped, crashed or handed over leadership) is
    /// unmeasured; below this share the SLO is Inconclusive, naming the gap.
    #[serde(default = "default_min_coverage_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_coverage_percent: f64,
    /// Other SLOs of this experiment this one's user journey goes through
    /// (messaging needs authentication). When this SLO fails while one of
    /// them is down, the verdict names that as the cause.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    pub depends_on: Vec<String>,
    /// Make this SLO a guard: once breached (failing, or unable to probe) for
    /// longer than its tolerance, the fault ends at once and the experiment is Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardSlo>,
}

fn default_max_error_percent() -> f64 {
    10.0
}
fn default_min_coverage_percent() -> f64 {
    90.0
}
fn default_interval() -> String {
    "1s".into()
}
fn default_timeout() -> String {
    "1s".into()
}

/// A guard SLO's tolerance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GuardSlo {
    /// How long the guard may stay breached before the fault is ended.
    #[serde(default = "default_tolerance")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(None, "1h", "tolerance"))]
    pub tolerance: String,
}

fn default_tolerance() -> String {
    "0s".into()
}

/// Exactly one of `http`, `tcp`, `prometheus`, `kubernetes`, `write`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.http), has(self.tcp), has(self.prometheus), has(self.kubernetes), has(self.write)].filter(x, x).size() == 1").message("exactly one probe kind must be set: http, tcp, prometheus, kubernetes or write"))]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteProbe>,
}

/// A write canary: every interval, through the service's own API, a
/// unique record is written (`POST url`); a write the service acknowledges
/// is logged, and after the observe window every acknowledged write is read
/// back (`GET readUrl`). Availability is the share of writes acknowledged;
/// the recovery point is the time covered by acknowledged writes that were lost.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriteProbe {
    /// Where each record is written, with POST: an `http://` or `https://`
    /// URL naming a host; no credentials, spaces or control characters.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("url must be an http:// or https:// URL"))]
    #[x_kube(validation = super::url_host_rule())]
    #[x_kube(validation = super::url_credentials_rule())]
    #[x_kube(validation = super::url_space_rule())]
    pub url: String,
    /// Where a record is read back, with GET: `{{id}}` is replaced by the
    /// write's id. Same scheme, host and port as `url`. A 2xx answer whose
    /// body holds the id is a kept write; 404, 410 or a 2xx answer without
    /// the id is a lost one; anything else is a read that failed.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.contains('{{id}}')").message("readUrl must carry {{id}}: it is where one written record is read back"))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("readUrl must be an http:// or https:// URL"))]
    #[x_kube(validation = super::url_space_rule())]
    pub read_url: String,
    /// The body of each write. `{{id}}` is replaced by the write's unique id,
    /// `{{time}}` by when it was made (RFC 3339).
    #[serde(default = "default_write_body")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.contains('{{id}}')").message("body must carry {{id}}: every write is a unique record"))]
    pub body: String,
    /// The body's Content-Type.
    #[serde(default = "default_content_type")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{}')", super::CONTROL_CHARACTERS)).message("contentType must not contain control characters"))]
    pub content_type: String,
    /// Request headers of writes and reads; values may come from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HttpHeader>,
    /// Status codes that acknowledge a write. Empty (the default): any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 100, max = 599)))]
    pub acknowledged_status: Vec<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// How many reads may be in flight at once while verifying.
    #[serde(default = "default_read_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub read_concurrency: i32,
    /// How long reading every acknowledged write back may take; what is not
    /// read by then is unverified.
    #[serde(default = "default_read_deadline")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    #[x_kube(validation = super::duration_rule(Some("1s"), "1h", "readDeadline"))]
    pub read_deadline: String,
}

fn default_write_body() -> String {
    r#"{"id":"{{id}}","time":"{{time}}"}"#.into()
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_read_concurrency() -> i32 {
    8
}
fn default_read_deadline() -> String {
    "2m".into()
}

/// An HTTP request that must answer with an expected status (and body).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// `http://` or `https://` URL, naming a host; no credentials
    /// (`user:password@`), spaces or control characters in it.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("url must be an http:// or https:// URL"))]
    #[x_kube(validation = super::url_host_rule())]
    #[x_kube(validation = super::url_credentials_rule())]
    #[x_kube(validation = super::url_space_rule())]
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers; values may come from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers: Vec<HttpHeader>,
    /// Status codes that count as success. Empty (the default): 200-399,
    /// as for a kubelet httpGet probe, so a redirect (3xx) counts as success
    /// when `followRedirects` is off. List the codes to be strict: `[200]`,
    /// or `[302]` for a login page that must answer with its redirect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 100, max = 599)))]
    pub expected_status: Vec<i32>,
    /// A substring the response body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub body_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Follow redirects, to the same scheme, host and port only (so headers
    /// carrying Secrets never leave the URL's origin). Off by default: a
    /// redirect answer is judged as it is.
    #[serde(default)]
    pub follow_redirects: bool,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Options,
}

/// One header; exactly one of `value` and `valueFrom`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("exactly one of value and valueFrom must be set"))]
pub struct HttpHeader {
    /// A header name: an HTTP token, so no spaces, colons or line breaks.
    #[schemars(length(min = 1, max = 256), pattern(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub name: String,
    /// The value, as it is; no control characters (CR, LF, tab, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{}')", super::CONTROL_CHARACTERS)).message("a header value must not contain control characters such as CR or LF"))]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret. The experiment is cluster-scoped, so the namespace is required.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// TLS settings for https probes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caSecretRef) && self.insecureSkipVerify)").message("caSecretRef and insecureSkipVerify exclude each other"))]
pub struct TlsConfig {
    /// PEM CA bundle to verify the server with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Do not verify the server's certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A TCP connect to host:port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpProbe {
    /// A host name or an IP address, as in `db.payments.svc` or `10.0.0.7`:
    /// no scheme, port or path (the port goes in `port`).
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{}') || self.matches('{}')", super::TCP_HOST_NAME, super::TCP_HOST_V6)).message("host must be a host name or an IP address, with no scheme, port or path (the port goes in port)"))]
    pub host: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// A PromQL query whose value must satisfy a comparison.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProbe {
    /// The Prometheus server, e.g. `http://prometheus.monitoring:9090`: its
    /// base URL, to which `/api/v1/query` is appended, so no query or
    /// fragment; no credentials (`user:password@`; use
    /// `bearerTokenSecretRef`), spaces or control characters.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("url must be an http:// or https:// URL"))]
    #[x_kube(validation = super::url_host_rule())]
    #[x_kube(validation = super::url_credentials_rule())]
    #[x_kube(validation = super::url_space_rule())]
    #[x_kube(validation = Rule::new("!self.matches('[?#]')").message("url must be the server's base URL, without a query or fragment: the probe appends /api/v1/query to it"))]
    pub url: String,
    #[schemars(length(min = 1, max = 8192))]
    pub query: String,
    /// Healthy when the query's value satisfies this, e.g. `< 0.01` or `>= 3`.
    #[schemars(
        length(max = 64),
        pattern(r"^ *(<|<=|>|>=|==|!=) *[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)? *$")
    )]
    pub success_when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// What an answer with no series means. `Fail` (the default): a query
    /// like `sum(up{job="checkout"}) >= 2` returns nothing when every
    /// target is gone, which is an outage, not a pass. `Ok` for queries
    /// written so that no series means healthy (`errors > 0`); `Error` to
    /// count it as a probe that could not run.
    #[serde(default)]
    pub empty_result: EmptyResult,
}

/// How an empty Prometheus answer counts.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum EmptyResult {
    #[default]
    Fail,
    Ok,
    Error,
}

/// Health as the cluster sees it; exactly one of `service` and `workload`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.service) != has(self.workload)").message("exactly one of service and workload must be set"))]
pub struct KubernetesProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadCheck>,
}

/// Healthy while the Service has at least `minReadyEndpoints` ready endpoints.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCheck {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_ready_endpoints: i32,
}

/// Healthy while the workload has at least `minAvailable` available replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadCheck {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_available: i32,
}

fn one() -> i32 {
    1
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
}

// ---------------------------------------------------------------------------
// Status: small and bounded. Counts and summaries, never one entry per pod.
// ---------------------------------------------------------------------------

/// How many names a status list may hold; the rest are counted, not listed.
pub const MAX_LISTED: usize = 20;

/// The most Services whose ready endpoints a drill records.
pub const MAX_WATCHED_SERVICES: usize = 64;

/// How often, besides on every change, a watched Service's ready endpoints
/// are sampled (milliseconds).
pub const ENDPOINTS_TICK_MS: u64 = 1_000;

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataCenterFailureStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// One line: why the experiment is where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the fault was ended early (abort annotation, guard breach, timeout);
    /// the experiment ends Aborted once the zone is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// When each phase was entered, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<PhaseTransition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<SloStatus>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Pending,
    Planning,
    Baseline,
    Injecting,
    ZoneDown,
    Restoring,
    Completed,
    Aborted,
    Failed,
}

impl Phase {
    /// No further work happens in a terminal phase.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Aborted | Phase::Failed)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTransition {
    pub phase: Phase,
    pub time: MicroTime,
}

/// What the planner found, as counts plus the first few names.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub nodes_in_zone: i32,
    pub nodes_in_cluster: i32,
    pub pods_in_scope: i32,
    /// Pods on the zone's nodes that are reported but not killed (out of scope,
    /// static/mirror pods, the operator's own pods).
    pub pods_spared: i32,
    pub workloads_losing_all_replicas: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads_losing_all_replicas_names: Vec<String>,
    pub pinned_pods: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_pod_names: Vec<String>,
    /// Replacement pods the scheduler will not be able to place outside the
    /// zone (pinned, spread constraints, anti-affinity, taints, per-pod fit).
    #[serde(default)]
    pub replacements_unschedulable: i32,
    /// Which workloads, how many, and the rule, e.g. `Deployment shop/web: 2
    /// of 2 replacements (topology spread constraint ...)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unschedulable_workloads: Vec<String>,
    /// What the plan expects of each SLO, from what its probe depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo_predictions: Vec<SloPredictionStatus>,
    /// The Service dependencies read from the workloads' configuration,
    /// one line per edge (`Deployment fleet/gateway -> Service fleet/tokens
    /// (env TOKENS_URL tokens.fleet.svc): LOST, ...`), the first few.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// The Services the dependency graph names (`namespace/name`, the
    /// first 64): their ready endpoints are recorded while the zone is dark.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_services: Vec<String>,
    /// Things that would make the measurements misleading, e.g. a probe's
    /// Prometheus running only in the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub pdbs_violated: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pdb_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacitySummary>,
}

/// The plan's expectation of one SLO.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloPredictionStatus {
    pub name: String,
    /// Absent when the plan cannot tell what the probe depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    pub why: String,
    /// What serves this SLO, e.g. `Service auth/login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it cannot fail over, in short, e.g. `pinned to zone-a by nodeSelector ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For a predicted cascade, the Services along its path
    /// (`namespace/name`, first hop first, the lost one last). The verdict
    /// prefers these when several Services' outages match the SLO's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub via: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CapacitySummary {
    /// CPU requested by the displaced pods, in millicores.
    pub cpu_needed_millis: i64,
    /// Free allocatable CPU in the surviving zones, in millicores.
    pub cpu_free_millis: i64,
    pub memory_needed_bytes: i64,
    pub memory_free_bytes: i64,
    pub sufficient: bool,
}

/// What the fault has done so far.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// Nodes taken down: the zone's nodes listed, and guarded again, at Injecting.
    #[serde(default)]
    pub nodes_taken: i32,
    pub nodes_cordoned: i32,
    pub nodes_tainted: i32,
    /// `NoExecute` when the experiment targets the whole zone and nothing on
    /// it was spared; `NoSchedule` otherwise, so spared pods are not evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint_effect: Option<String>,
    pub pods_killed: i32,
    /// Pods on the zone's nodes left running because they are out of scope.
    #[serde(default)]
    pub pods_spared: i32,
    /// Pods the API server would not delete (the experiment is aborted then).
    #[serde(default)]
    pub pods_not_killed: i32,
    /// Pods killed again because they landed on the dark zone.
    pub pods_rekilled: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_dark_at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<MicroTime>,
    /// PowerLoss: nodes whose agent acknowledged the cut (its nft table is in place).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nodes_acknowledged: i32,
    /// PowerLoss: nodes the node lifecycle controller marked NotReady while dark.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nodes_not_ready: i32,
    /// PowerLoss: when every node of the zone had acknowledged the cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_acknowledged_at: Option<MicroTime>,
    /// PowerLoss: when every node of the zone had acknowledged the cut and
    /// was NotReady: the zone verified dark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dark_verified_at: Option<MicroTime>,
    /// PowerLoss: why the zone could not be verified dark (the node, and what
    /// it did not do: acknowledge the cut, go NotReady); the drill was
    /// aborted and its verdict is Inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_dark: Option<String>,
    /// PowerLoss: when every node of the zone was Ready again after the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_ready_again_at: Option<MicroTime>,
    pub nodes_restored: i32,
    /// What changed in the zone behind the plan's back: nodes that joined or
    /// left it between planning and injection, nodes deleted, relabelled or
    /// unmarked while dark. At most 20 notes; `zoneChangesTotal` counts all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone_changes: Vec<String>,
    #[serde(default)]
    pub zone_changes_total: i32,
}

/// The measured outcome of one SLO.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SloStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// From injection to the start of the healthy streak that then held; absent if it never recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_outage_seconds: Option<f64>,
    /// Time healthy over time answered (failed or healthy) in the window, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_percent: Option<f64>,
    pub samples: i64,
    pub failures: i64,
    /// Samples where the probe could not run at all.
    #[serde(default)]
    pub errors: i64,
    /// Their share of the window's time, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why it failed, from what the cluster showed at the end of the dark
    /// window and what the plan found behind this SLO's probe only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// What the plan predicted for this SLO (absent: it could not tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Verdict>,
    /// Its dependencies, declared (`dependsOn`) and observed (a Service
    /// whose ready endpoints went and came back with this SLO), each
    /// checked against the other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub dependencies: Vec<DependencyFinding>,
    /// A write probe's writes, read back after the drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<WriteStatus>,
}

/// One dependency of an SLO, as declared and as observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DependencyFinding {
    /// `Service fleet/tokens`, or `SLO authentication` for a declaration
    /// whose SLO's probe names no Service.
    pub name: String,
    /// Named by `dependsOn` (through the SLO that Service backs).
    pub declared: bool,
    /// Its outage matched this SLO's.
    pub observed: bool,
    /// `declared and observed`, `declared, not observed`, `observed, not declared`.
    pub finding: String,
    /// The windows side by side: when it had no ready endpoint, and when
    /// this SLO failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What a write probe's read-back found, over the whole drill (baseline,
/// dark window and observe window).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriteStatus {
    /// Writes the service acknowledged.
    pub acknowledged: i64,
    /// Writes refused (or not answered) while the zone was dark: the
    /// availability, not data lost.
    pub refused_while_dark: i64,
    /// Acknowledged writes that were not there when read back.
    pub lost: i64,
    /// Acknowledged writes that could not be read back (errors, the
    /// deadline): neither kept nor lost.
    pub unverified: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_lost: Option<LostWriteStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lost: Option<LostWriteStatus>,
    /// The recovery point: the longest span of acknowledged writes lost,
    /// from the last write read back before them to the last one lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point_seconds: Option<f64>,
}

/// One lost write: its id and when it was made (to the microsecond: a
/// recovery point is a matter of seconds).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LostWriteStatus {
    pub id: String,
    pub at: MicroTime,
}
