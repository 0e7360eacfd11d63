//! Manifests the tests apply: the one DataCenterFailure builder ([`Drill`],
//! with its [`Slo`]s), the workloads drills run against, and testbed nodes.

/// A DataCenterFailure manifest, built up option by option:
///
/// ```text
/// Drill::new("dark", "zone-a")
///     .duration("8s")
///     .baseline("1s")
///     .namespace("shop")
///     .slo(Slo::new("web", "30s").interval("200ms").service("shop", "web"))
///     .yaml()
/// ```
///
/// Only what is set is written, so the API server's defaults apply to the
/// rest (a drill without `baseline` gets the default one). Without SLOs it
/// is a fault-only drill (`faultOnly: true`).
#[derive(Clone, Debug)]
pub struct Drill {
    name: String,
    zone: String,
    topology_key: Option<String>,
    duration: Option<String>,
    baseline: Option<String>,
    observe: Option<String>,
    namespaces: Vec<String>,
    exclude_namespaces: Vec<String>,
    match_labels: Option<String>,
    include_daemon_sets: bool,
    guards: Option<String>,
    slos: Vec<Slo>,
}

impl Drill {
    /// A drill named `name` that takes `zone` down.
    pub fn new(name: &str, zone: &str) -> Self {
        Drill {
            name: name.into(),
            zone: zone.into(),
            topology_key: None,
            duration: None,
            baseline: None,
            observe: None,
            namespaces: vec![],
            exclude_namespaces: vec![],
            match_labels: None,
            include_daemon_sets: false,
            guards: None,
            slos: vec![],
        }
    }

    /// Another zone (`spec.zone`).
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = zone.into();
        self
    }

    /// The node label that names zones (`spec.topologyKey`).
    pub fn topology_key(mut self, key: &str) -> Self {
        self.topology_key = Some(key.into());
        self
    }

    /// How long the zone stays down (`spec.duration`).
    pub fn duration(mut self, duration: &str) -> Self {
        self.duration = Some(duration.into());
        self
    }

    /// The steady-state check before the fault (`spec.baseline`).
    pub fn baseline(mut self, baseline: &str) -> Self {
        self.baseline = Some(baseline.into());
        self
    }

    /// Probing after the restore (`spec.observe`).
    pub fn observe(mut self, observe: &str) -> Self {
        self.observe = Some(observe.into());
        self
    }

    /// One more namespace in scope (`spec.target.namespaces`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespaces.push(namespace.into());
        self
    }

    /// One more namespace out of scope (`spec.target.excludeNamespaces`).
    pub fn exclude_namespace(mut self, namespace: &str) -> Self {
        self.exclude_namespaces.push(namespace.into());
        self
    }

    /// Only pods with these labels, a flow-map body such as `tier: web`
    /// (`spec.target.labelSelector.matchLabels`).
    pub fn match_labels(mut self, labels: &str) -> Self {
        self.match_labels = Some(labels.into());
        self
    }

    /// DaemonSet pods in scope too (`spec.target.includeDaemonSets`).
    pub fn include_daemon_sets(mut self) -> Self {
        self.include_daemon_sets = true;
        self
    }

    /// `spec.guards`, a flow-map body such as `maxNodes: 3` (empty: `{}`).
    pub fn guards(mut self, guards: &str) -> Self {
        self.guards = Some(guards.into());
        self
    }

    /// One more SLO (`spec.slos`).
    pub fn slo(mut self, slo: Slo) -> Self {
        self.slos.push(slo);
        self
    }

    /// The manifest.
    pub fn yaml(&self) -> String {
        let mut spec = vec![format!("zone: {}", self.zone)];
        for (key, value) in [
            ("topologyKey", &self.topology_key),
            ("duration", &self.duration),
            ("baseline", &self.baseline),
            ("observe", &self.observe),
        ] {
            if let Some(v) = value {
                spec.push(format!("{key}: {v}"));
            }
        }
        if self.slos.is_empty() {
            spec.push("faultOnly: true".into());
        }
        let scoped = !self.namespaces.is_empty()
            || !self.exclude_namespaces.is_empty()
            || self.match_labels.is_some()
            || self.include_daemon_sets;
        if scoped {
            spec.push("target:".into());
            if !self.namespaces.is_empty() {
                spec.push(format!("  namespaces: [{}]", self.namespaces.join(", ")));
            }
            if !self.exclude_namespaces.is_empty() {
                let excluded = self.exclude_namespaces.join(", ");
                spec.push(format!("  excludeNamespaces: [{excluded}]"));
            }
            if let Some(labels) = &self.match_labels {
                spec.push(format!("  labelSelector: {{matchLabels: {{{labels}}}}}"));
            }
            if self.include_daemon_sets {
                spec.push("  includeDaemonSets: true".into());
            }
        }
        if let Some(guards) = &self.guards {
            spec.push(format!("guards: {{{guards}}}"));
        }
        if !self.slos.is_empty() {
            spec.push("slos:".into());
            for slo in &self.slos {
                spec.extend(slo.lines());
            }
        }
        let spec: String = spec.iter().map(|line| format!("  {line}\n")).collect();
        format!(
            r#"apiVersion: chaos.firedrill.dev/v1alpha1
kind: DataCenterFailure
metadata:
  name: {name}
spec:
{spec}"#,
            name = self.name
        )
    }
}

/// One SLO of a [`Drill`]: a name, a recovery time objective, and one probe
/// (set with [`service`](Slo::service), [`http`](Slo::http),
/// [`tcp`](Slo::tcp) or [`prometheus`](Slo::prometheus)).
#[derive(Clone, Debug)]
pub struct Slo {
    name: String,
    recovery_time_objective: String,
    availability_objective: Option<f64>,
    interval: Option<String>,
    timeout: Option<String>,
    guard_tolerance: Option<String>,
    depends_on: Vec<String>,
    recovery_point_objective: Option<String>,
    probe: Option<Probe>,
}

#[derive(Clone, Debug)]
enum Probe {
    Service {
        namespace: String,
        name: String,
        min_ready_endpoints: Option<u32>,
    },
    Http {
        url: String,
        /// (header, `{namespace: .., name: .., key: ..}` of its Secret)
        secret_headers: Vec<(String, String)>,
        tls: Option<String>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Write {
        url: String,
        read_url: String,
    },
    Prometheus {
        url: String,
        query: String,
        success_when: String,
    },
}

impl Slo {
    /// An SLO named `name` that must recover within `recovery_time_objective`.
    pub fn new(name: &str, recovery_time_objective: &str) -> Self {
        Slo {
            name: name.into(),
            recovery_time_objective: recovery_time_objective.into(),
            availability_objective: None,
            interval: None,
            timeout: None,
            guard_tolerance: None,
            depends_on: vec![],
            recovery_point_objective: None,
            probe: None,
        }
    }

    /// `dependsOn`: other SLOs this journey goes through.
    pub fn depends_on(mut self, slo: &str) -> Self {
        self.depends_on.push(slo.into());
        self
    }

    /// A write probe: POST a record to `url`, read it back at `read_url`
    /// (with `{{id}}`).
    pub fn write(mut self, url: &str, read_url: &str) -> Self {
        self.probe = Some(Probe::Write {
            url: url.into(),
            read_url: read_url.into(),
        });
        self
    }

    /// `recoveryPointObjective`, for a write probe.
    pub fn recovery_point_objective(mut self, objective: &str) -> Self {
        self.recovery_point_objective = Some(objective.into());
        self
    }

    /// `availabilityObjective`, in percent.
    pub fn availability_objective(mut self, percent: f64) -> Self {
        self.availability_objective = Some(percent);
        self
    }

    /// How often the probe runs (`interval`).
    pub fn interval(mut self, interval: &str) -> Self {
        self.interval = Some(interval.into());
        self
    }

    /// How long one probe may take (`timeout`).
    pub fn timeout(mut self, timeout: &str) -> Self {
        self.timeout = Some(timeout.into());
        self
    }

    /// A guard SLO: a breach longer than `tolerance` aborts the fault.
    pub fn guard_tolerance(mut self, tolerance: &str) -> Self {
        self.guard_tolerance = Some(tolerance.into());
        self
    }

    /// Probe the ready endpoints of Service `namespace/name`.
    pub fn service(mut self, namespace: &str, name: &str) -> Self {
        self.probe = Some(Probe::Service {
            namespace: namespace.into(),
            name: name.into(),
            min_ready_endpoints: None,
        });
        self
    }

    /// With [`service`](Slo::service): how many ready endpoints it needs.
    pub fn min_ready_endpoints(mut self, min: u32) -> Self {
        match &mut self.probe {
            Some(Probe::Service {
                min_ready_endpoints,
                ..
            }) => *min_ready_endpoints = Some(min),
            _ => panic!("min_ready_endpoints is for a service probe"),
        }
        self
    }

    /// Probe `url` over HTTP(S).
    pub fn http(mut self, url: &str) -> Self {
        self.probe = Some(Probe::Http {
            url: url.into(),
            secret_headers: vec![],
            tls: None,
        });
        self
    }

    /// With [`http`](Slo::http): send `header` with the value of `key` in
    /// Secret `namespace/name`.
    pub fn header_from_secret(
        mut self,
        header: &str,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Self {
        match &mut self.probe {
            Some(Probe::Http { secret_headers, .. }) => secret_headers.push((
                header.into(),
                format!("{{namespace: {namespace}, name: {name}, key: {key}}}"),
            )),
            _ => panic!("header_from_secret is for an http probe"),
        }
        self
    }

    /// With [`http`](Slo::http): verify with the CA in `key` of Secret
    /// `namespace/name`.
    pub fn ca_from_secret(self, namespace: &str, name: &str, key: &str) -> Self {
        self.with_tls(format!(
            "{{caSecretRef: {{namespace: {namespace}, name: {name}, key: {key}}}}}"
        ))
    }

    /// With [`http`](Slo::http): accept any certificate.
    pub fn insecure_skip_verify(self) -> Self {
        self.with_tls("{insecureSkipVerify: true}".into())
    }

    fn with_tls(mut self, flow: String) -> Self {
        match &mut self.probe {
            Some(Probe::Http { tls, .. }) => *tls = Some(flow),
            _ => panic!("TLS settings are for an http probe"),
        }
        self
    }

    /// Probe a TCP connection to `host:port`.
    pub fn tcp(mut self, host: &str, port: u16) -> Self {
        self.probe = Some(Probe::Tcp {
            host: host.into(),
            port,
        });
        self
    }

    /// Probe a PromQL `query` at the Prometheus at `url`, passing when the
    /// value satisfies `success_when` (such as `< 0.05`).
    pub fn prometheus(mut self, url: &str, query: &str, success_when: &str) -> Self {
        self.probe = Some(Probe::Prometheus {
            url: url.into(),
            query: query.into(),
            success_when: success_when.into(),
        });
        self
    }

    /// The SLO as an item of `spec.slos`, line by line.
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!("- name: {}", self.name),
            format!("  recoveryTimeObjective: {}", self.recovery_time_objective),
        ];
        if let Some(percent) = self.availability_objective {
            lines.push(format!("  availabilityObjective: {percent}"));
        }
        for (key, value) in [("interval", &self.interval), ("timeout", &self.timeout)] {
            if let Some(v) = value {
                lines.push(format!("  {key}: {v}"));
            }
        }
        if let Some(tolerance) = &self.guard_tolerance {
            lines.push(format!("  guard: {{tolerance: {tolerance}}}"));
        }
        if !self.depends_on.is_empty() {
            lines.push(format!("  dependsOn: [{}]", self.depends_on.join(", ")));
        }
        if let Some(rpo) = &self.recovery_point_objective {
            lines.push(format!("  recoveryPointObjective: {rpo}"));
        }
        lines.push("  probe:".into());
        match self.probe.as_ref().expect("an SLO needs a probe") {
            Probe::Service {
                namespace,
                name,
                min_ready_endpoints,
            } => {
                let min = min_ready_endpoints
                    .map(|n| format!(", minReadyEndpoints: {n}"))
                    .unwrap_or_default();
                lines.push("    kubernetes:".into());
                lines.push(format!(
                    "      service: {{namespace: {namespace}, name: {name}{min}}}"
                ));
            }
            Probe::Http {
                url,
                secret_headers,
                tls,
            } => {
                lines.push("    http:".into());
                lines.push(format!("      url: {}", quoted(url)));
                if !secret_headers.is_empty() {
                    lines.push("      headers:".into());
                    for (header, secret) in secret_headers {
                        lines.push(format!("      - name: {header}"));
                        lines.push(format!("        valueFrom: {{secretKeyRef: {secret}}}"));
                    }
                }
                if let Some(tls) = tls {
                    lines.push(format!("      tls: {tls}"));
                }
            }
            Probe::Tcp { host, port } => {
                lines.push(format!("    tcp: {{host: {host}, port: {port}}}"));
            }
            Probe::Write { url, read_url } => {
                lines.push("    write:".into());
                lines.push(format!("      url: {}", quoted(url)));
                lines.push(format!("      readUrl: {}", quoted(read_url)));
            }
            Probe::Prometheus {
                url,
                query,
                success_when,
            } => {
                lines.push("    prometheus:".into());
                lines.push(format!("      url: {}", quoted(url)));
                lines.push(format!("      query: {}", quoted(query)));
                lines.push(format!("      successWhen: {}", quoted(success_when)));
            }
        }
        lines
    }
}

/// `s` as a double-quoted YAML scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A Deployment of `replicas` placeholder pods labelled `app: NAME` and a
/// Service in front of them. `pod_meta` is added to the pod template's
/// metadata flow map (e.g. `, annotations: {...}`), `placement` to its spec
/// (lines indented six spaces).
pub fn service_and_deployment(
    ns: &str,
    name: &str,
    replicas: u32,
    pod_meta: &str,
    placement: &str,
) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}{pod_meta}}}
    spec:
{placement}
      containers: [{{name: app, image: registry.invalid/{name}:1, ports: [{{containerPort: 8080}}], resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// Spread over the zones by a topology spread constraint on `app: NAME`.
pub fn spread_over_zones(name: &str, when_unsatisfiable: &str) -> String {
    format!(
        "      topologySpreadConstraints: [{{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: {when_unsatisfiable}, labelSelector: {{matchLabels: {{app: {name}}}}}}}]"
    )
}

/// Two services in `ns`: `chat` (6 replicas spread over the zones) and
/// `login` (2 replicas pinned to zone-a by nodeSelector), each behind a
/// Service of the same name.
pub fn chat_and_login(ns: &str) -> String {
    let pinned = "      nodeSelector: {topology.kubernetes.io/zone: zone-a}";
    format!(
        "{}{}",
        // A replacement chat pod takes 2 s to turn Ready, as a real container
        // would, so losing a zone is a dip an SLO probe can see.
        service_and_deployment(
            ns,
            "chat",
            6,
            ", annotations: {pod-ready.stage.kwok.x-k8s.io/delay: 2s}",
            &spread_over_zones("chat", "ScheduleAnyway"),
        ),
        service_and_deployment(ns, "login", 2, "", pinned)
    )
}

/// A store served by the testbed (`ledger`): its primary pinned to zone-a,
/// and, with `replication` (`sync`, `async:2s`), a standby pinned to zone-b
/// that is promoted when the primary is lost. Services: `ledger` (every
/// member, what clients use), `ledger-primary`, `ledger-standby`.
pub fn ledger(ns: &str, replication: Option<&str>) -> String {
    let member = |role: &str, zone: &str, peer: &str| {
        let rep = replication.unwrap_or("async");
        let peer = if replication.is_some() {
            format!(", testbed.firedrill.dev/store-peer: 'http://ledger-{peer}.{ns}.svc'")
        } else {
            String::new()
        };
        format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ledger-{role}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: ledger, role: {role}}}}}
  template:
    metadata:
      labels: {{app: ledger, role: {role}, testbed.firedrill.dev/serve: "true"}}
      annotations: {{testbed.firedrill.dev/store: ledger, testbed.firedrill.dev/store-role: {role}, testbed.firedrill.dev/replication: '{rep}'{peer}}}
    spec:
      nodeSelector: {{topology.kubernetes.io/zone: {zone}}}
      containers: [{{name: app, image: registry.invalid/ledger:1, ports: [{{containerPort: 8080}}], resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ledger-{role}, namespace: {ns}}}
spec: {{selector: {{app: ledger, role: {role}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
        )
    };
    let mut out = member("primary", "zone-a", "standby");
    if replication.is_some() {
        out.push_str(&member("standby", "zone-b", "primary"));
    }
    out.push_str(&format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: ledger, namespace: {ns}}}
spec: {{selector: {{app: ledger}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    ));
    out
}

/// A KWOK node manifest like the testbed's own.
pub fn kwok_node_yaml(name: &str, zone: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations: {{kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}}
  labels: {{type: kwok, kubernetes.io/arch: amd64, kubernetes.io/os: linux, kubernetes.io/hostname: {name}, topology.kubernetes.io/zone: {zone}, topology.kubernetes.io/region: testbed}}
status:
  allocatable: {{cpu: "16", memory: 64Gi, pods: "110"}}
  capacity: {{cpu: "16", memory: 64Gi, pods: "110"}}
  nodeInfo: {{architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}}
"#
    )
}
