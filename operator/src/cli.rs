//! The `firedrill` command line (also installed as the kubectl plugin
//! `kubectl-firedrill`).

use crate::api::{self, DataCenterFailureSpec};
use crate::controller;
use crate::plan::{self, Request, Scope, collect};
use crate::run;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::ResourceExt;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "firedrill",
    version,
    about = "Rehearse the loss of a whole data center (availability zone) and measure whether services fail over within their SLOs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FIREDRILL_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile DataCenterFailure resources.
    Operator(OperatorArgs),
    /// Show what losing a zone would break. Changes nothing.
    Plan(PlanArgs),
    /// Apply an experiment and (with --wait) follow it to its verdict: a release-pipeline gate.
    ///
    /// Exit codes: 0 Passed, 1 Failed, 2 Aborted or Inconclusive, 3 usage error or cluster unreachable.
    Run(RunArgs),
    /// Render the report of an experiment.
    Report(ReportArgs),
    /// The node agent (a DaemonSet): cuts its node off the network while a
    /// PowerLoss drill holds the node's zone, until the drill's deadline at
    /// the latest. `cut` and `lift` act on this machine directly.
    Agent(AgentArgs),
    /// End every running drill and make sure every zone is lit again, before
    /// the operator is removed (the chart runs it on `helm uninstall`).
    ///
    /// Each running drill is aborted and waited for while the operator
    /// restores its zone; drills no operator ends in time are restored here
    /// from the marks on the nodes and marked Aborted. Exits non-zero if a
    /// node still carries firedrill's marks or taint.
    StandDown(StandDownArgs),
    /// Print the CustomResourceDefinitions (pipe into `kubectl apply -f -`).
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct OperatorArgs {
    /// The operator's own namespace; its pods are never killed.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Label selector of the operator's own pods (for the protectOperator guard).
    #[arg(long, default_value = "app.kubernetes.io/name=firedrill")]
    self_selector: String,
    /// API calls in flight at once for node patches and pod deletes (a
    /// throttled delete, HTTP 429, waits and is tried again).
    #[arg(long, default_value_t = crate::fault::DEFAULT_WRITE_CONCURRENCY)]
    concurrency: usize,
    /// How long past spec.duration an experiment may run before it is ended and restored.
    #[arg(long, default_value = "2m", value_parser = parse_duration_arg)]
    restore_grace: Duration,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "FIREDRILL_METRICS_BIND")]
    metrics_bind: String,
    /// Serve /healthz and /readyz on a port of their own too (e.g. 0.0.0.0:8081), for the kubelet.
    #[arg(long, env = "FIREDRILL_HEALTH_BIND")]
    health_bind: Option<String>,
    /// Elect a leader on a Lease, so only one operator acts at a time (--leader-elect=false to turn off).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (default: --namespace, else "default").
    #[arg(long)]
    leader_elect_namespace: Option<String>,
    /// How long a leader's Lease lasts without renewal before a standby takes over.
    #[arg(long, default_value = "15s", value_parser = parse_duration_arg)]
    leader_elect_lease_duration: Duration,
    /// How long taking a zone down (marking, killing, tainting) may take before the experiment is aborted and restored.
    #[arg(long, default_value = "10m", value_parser = parse_duration_arg)]
    injection_timeout: Duration,
    /// PowerLoss: every node agent of the zone must acknowledge the cut this
    /// long after the nodes were labelled, or the drill is aborted and
    /// Inconclusive.
    #[arg(long, default_value = "45s", value_parser = parse_duration_arg)]
    power_ack_timeout: Duration,
    /// PowerLoss: every node of the zone must be NotReady this long after
    /// the nodes were labelled, or the drill is aborted and Inconclusive. At
    /// least the controller manager's --node-monitor-grace-period (50s by
    /// default) plus its --node-monitor-period (5s).
    #[arg(long, default_value = "90s", value_parser = parse_duration_arg)]
    power_not_ready_timeout: Duration,
    /// Namespaces whose Secrets probes may read (header values, bearer
    /// tokens, CA bundles); comma-separated. Default: the operator's own.
    #[arg(long, env = "FIREDRILL_SECRET_NAMESPACES", value_delimiter = ',')]
    secret_namespaces: Vec<String>,
    /// Let probes target link-local and cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254, fd00:c1::a9fe:a9fe,
    /// 100.100.100.200, 168.63.129.16). Off by default.
    #[arg(long)]
    allow_link_local_probes: bool,
    /// Look the probes' host names up in this hosts file (`ADDRESS NAME...`
    /// lines) before DNS, like `curl --resolve`: for an operator running
    /// outside the cluster that probes in-cluster names.
    #[arg(long, value_name = "FILE", env = "FIREDRILL_PROBE_HOSTS")]
    probe_hosts: Option<PathBuf>,
    /// Pause between node changes while injecting (to rehearse an operator crash mid-injection).
    #[arg(long, hide = true, value_parser = parse_duration_arg)]
    debug_inject_pause: Option<Duration>,
}

#[derive(Args)]
struct StandDownArgs {
    /// Why the drills are ended (written into the abort annotation).
    #[arg(long, default_value = "the operator is being uninstalled")]
    reason: String,
    /// How long to wait for the operator to restore and end the drills
    /// before restoring their nodes here.
    #[arg(long, default_value = "210s", value_parser = parse_duration_arg)]
    timeout: Duration,
    /// How often to look again and print a progress line.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    poll: Duration,
}

#[derive(Args)]
struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    /// The node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    node: Option<String>,
    /// Addresses whose traffic the partition keeps (the agent's own, so it
    /// hears the restore), repeatable.
    #[arg(long = "spare", env = "POD_IP", value_delimiter = ',')]
    spare: Vec<std::net::IpAddr>,
    /// Put the rules into this network namespace (the host's:
    /// /proc/1/ns/net, with hostPID) instead of the agent's own.
    #[arg(long, value_name = "PATH")]
    host_netns: Option<PathBuf>,
    /// How far past an experiment's duration a power-loss deadline may
    /// reach (the operator's --restore-grace): a later deadline is capped.
    #[arg(long, default_value = "120s", value_parser = parse_duration_arg)]
    restore_grace: Duration,
}

#[derive(Subcommand)]
enum AgentAction {
    /// Cut this machine off now, until a Unix second at the latest.
    Cut {
        #[arg(long)]
        until: i64,
        /// Drop loopback traffic too (only for testing the rules in a
        /// network namespace of their own).
        #[arg(long)]
        no_spare_loopback: bool,
    },
    /// Lift the partition now (the escape hatch).
    Lift,
}

#[derive(Args)]
struct PlanArgs {
    /// Plan this DataCenterFailure (zone, target, guards and SLOs from its
    /// spec; `-` for standard input). The flags below override it.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<String>,
    /// The zone to plan the loss of (required without --file).
    #[arg(long, required_unless_present = "file")]
    zone: Option<String>,
    /// The node label that names a node's zone (default: topology.kubernetes.io/zone).
    #[arg(long)]
    topology_key: Option<String>,
    /// Only these namespaces (repeatable; default: all).
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// Never these namespaces (repeatable), besides the system namespaces.
    #[arg(long = "exclude-namespace")]
    exclude_namespaces: Option<Vec<String>>,
    /// Only pods matching this label selector.
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Skip the capacity check (it reads every running pod, node by node).
    #[arg(long)]
    no_capacity: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Args)]
struct ReportFiles {
    /// Write a JUnit XML report (one testcase per SLO).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write the JSON report (schema firedrill.dev/report/v1).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with the SLO timeline.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

impl ReportFiles {
    fn outputs(&self) -> run::Outputs {
        run::Outputs {
            junit: self.junit.clone(),
            json: self.json.clone(),
            html: self.html.clone(),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// The DataCenterFailure to apply (`-` for standard input).
    #[arg(long, short = 'f', value_name = "FILE")]
    file: String,
    /// Follow the experiment to its verdict and exit with its code.
    #[arg(long)]
    wait: bool,
    /// With --wait: abort the experiment (and wait for the restore) after this long, e.g. 30m.
    #[arg(long, value_parser = parse_duration_arg)]
    timeout: Option<Duration>,
    #[command(flatten)]
    files: ReportFiles,
}

#[derive(Args)]
struct ReportArgs {
    /// The experiment's name.
    name: String,
    #[command(flatten)]
    files: ReportFiles,
    /// Print the JSON report instead of the table.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: ReportOutput,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportOutput {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
    /// The Service dependency graph, in Graphviz dot.
    Dot,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    api::parse_duration(s).map_err(|e| e.to_string())
}

/// Run the command line; the process exits with the returned code.
pub fn main() -> ExitCode {
    // A command line that cannot be read is a usage error (3), as the docs
    // and the gate's exit codes say; clap's own code would be 2, which means
    // Inconclusive to a pipeline. Help and version still exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { run::EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Crd { dir } => crd(dir).map(|()| ExitCode::SUCCESS),
        Command::Agent(args) => rt.block_on(agent_cmd(args)).map(|()| ExitCode::SUCCESS),
        Command::Operator(args) => rt.block_on(operator(args)).map(|()| ExitCode::SUCCESS),
        Command::Plan(args) => rt.block_on(plan_cmd(args)),
        Command::Run(args) => rt.block_on(run_cmd(args)),
        Command::Report(args) => rt.block_on(report_cmd(args)),
        Command::StandDown(args) => rt.block_on(stand_down_cmd(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(run::EXIT_USAGE)
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn clients() -> anyhow::Result<controller::Clients> {
    let clients = controller::Clients::infer()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the cluster: {e}"))?;
    clients
        .calls
        .apiserver_version()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the cluster: {e}"))?;
    Ok(clients)
}

async fn client() -> anyhow::Result<kube::Client> {
    Ok(clients().await?.calls)
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let clients = clients().await?;
    let probes = probe_env(&args, &clients);
    // Bounded: an API server slow to answer at start must not keep the
    // operator from serving /healthz and restoring held zones. Planning
    // learns again before every drill with network probes.
    if tokio::time::timeout(Duration::from_secs(10), probes.learn(&clients.calls))
        .await
        .is_err()
    {
        tracing::warn!(
            "the API server's addresses were not all learned within 10s; planning learns them again"
        );
    }
    tracing::info!(addresses = ?probes.api_server_addresses(), "the API server's addresses: never a probe target");
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let lease_namespace = args
        .leader_elect_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let config = controller::Config {
        self_selector: (in_cluster && args.namespace.is_some()).then_some(args.self_selector),
        namespace: args.namespace,
        concurrency: args.concurrency,
        restore_grace: args.restore_grace,
        injection_timeout: args.injection_timeout,
        power_ack_timeout: args.power_ack_timeout,
        power_not_ready_timeout: args.power_not_ready_timeout,
        inject_pause: args.debug_inject_pause,
        probes,
    };
    let metrics_addr = serve_metrics(
        &args.metrics_bind,
        args.health_bind.as_deref(),
        &clients.metrics,
    )
    .await?;
    tracing::info!(namespace = ?config.namespace, concurrency = config.concurrency, metrics = %metrics_addr, "firedrill operator starting");
    let stop = stop_on_signal();
    if !args.leader_elect {
        clients.metrics.leader.set(1);
        let ctx = controller::run(clients, config, stop).await?;
        controller::stand_down(&ctx).await;
        tracing::info!("firedrill operator stopped");
        return Ok(());
    }
    let elector = crate::leader::Elector::new(
        &clients,
        &lease_namespace,
        LEASE_NAME,
        &crate::leader::identity(),
        args.leader_elect_lease_duration,
    );
    lead(clients, config, stop, elector).await
}

/// What the probes may reach: the Secrets of which namespaces, link-local
/// addresses or not, and where the API server is; and the hosts file they
/// look names up in first, if any.
fn probe_env(args: &OperatorArgs, clients: &controller::Clients) -> crate::probe::Env {
    let mut secret_namespaces: std::collections::BTreeSet<String> = args
        .secret_namespaces
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if secret_namespaces.is_empty()
        && let Some(ns) = &args.namespace
    {
        secret_namespaces.insert(ns.clone());
    }
    let mut apiserver = vec![clients.apiserver.clone()];
    if let (Ok(h), Ok(p)) = (
        std::env::var("KUBERNETES_SERVICE_HOST"),
        std::env::var("KUBERNETES_SERVICE_PORT"),
    ) && let Ok(p) = p.parse()
    {
        apiserver.push((h, p));
    }
    tracing::info!(secret_namespaces = ?secret_namespaces, allow_link_local = args.allow_link_local_probes, "probe policy");
    crate::probe::Env::new(
        crate::probe::Policy {
            secret_namespaces,
            allow_link_local: args.allow_link_local_probes,
            apiserver,
        },
        args.probe_hosts.clone(),
    )
}

/// Serve /metrics, /healthz and /readyz on `metrics_bind`, and the health
/// probes alone on `health_bind` too when given. Where the metrics are.
async fn serve_metrics(
    metrics_bind: &str,
    health_bind: Option<&str>,
    metrics: &std::sync::Arc<crate::metrics::Metrics>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(metrics_bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {metrics_bind}: {e}"))?;
    let metrics_addr = listener.local_addr()?;
    tokio::spawn(crate::metrics::serve(
        listener,
        crate::metrics::Paths::All,
        metrics.clone(),
    ));
    if let Some(bind) = health_bind {
        let health = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve health probes on {bind}: {e}"))?;
        tracing::info!(health = %health.local_addr()?, "health probes on a port of their own");
        tokio::spawn(crate::metrics::serve(
            health,
            crate::metrics::Paths::Health,
            metrics.clone(),
        ));
    }
    Ok(metrics_addr)
}

/// Turns true on SIGTERM or Ctrl-C.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stop requested");
        let _ = stop_tx.send(true);
    });
    stop
}

/// Wait to be elected, then act until told to stop (handing over to a
/// standby, or restoring every zone held) or until leadership is lost.
async fn lead(
    clients: controller::Clients,
    config: controller::Config,
    stop: tokio::sync::watch::Receiver<bool>,
    elector: crate::leader::Elector,
) -> anyhow::Result<()> {
    let mut stopping = stop.clone();
    tokio::select! {
        _ = elector.acquire(&clients.metrics) => {}
        _ = stopping.wait_for(|s| *s) => {
            elector.retire_standby().await;
            tracing::info!("firedrill operator stopped before it became the leader");
            return Ok(());
        }
    }
    elector.retire_standby().await;
    let metrics = clients.metrics.clone();
    metrics.leader.set(1);
    let ctx = controller::Context::new(clients.clone(), config);
    tokio::select! {
        done = controller::run_with(ctx.clone(), clients, stop) => {
            done?;
            metrics.leader.set(0);
            hand_over(&ctx, &elector).await;
            elector.release().await;
            tracing::info!("firedrill operator stopped");
            Ok(())
        }
        why = elector.hold() => {
            // Stop acting at once: another operator may lead now, and it
            // continues every experiment from the cluster's state.
            metrics.leader.set(0);
            let left = controller::left_behind(&ctx.abandon());
            anyhow::bail!("lost leadership ({why}); exiting so that only one operator acts; {left}")
        }
    }
}

/// On a rolling update another operator stands by and continues every
/// experiment from the cluster's state. Only the last operator standing
/// restores what it holds.
async fn hand_over(ctx: &controller::Context, elector: &crate::leader::Elector) {
    match elector.standbys().await {
        Ok(others) if !others.is_empty() => {
            ctx.save_all().await;
            tracing::info!(standbys = ?others, "handing the experiments over to a standby operator");
        }
        Ok(_) => controller::stand_down(ctx).await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether another operator stands by; restoring every zone held");
            controller::stand_down(ctx).await;
        }
    }
}

/// The Lease the operators of one cluster elect their leader on.
pub const LEASE_NAME: &str = "firedrill-operator";

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn agent_cmd(args: AgentArgs) -> anyhow::Result<()> {
    let nft = crate::agent::Nft {
        netns: args.host_netns,
        ..Default::default()
    };
    match args.action {
        Some(AgentAction::Cut {
            until,
            no_spare_loopback,
        }) => {
            nft.cut(&crate::agent::Partition {
                until,
                spare_loopback: !no_spare_loopback,
                spare: args.spare,
            })
            .await
        }
        Some(AgentAction::Lift) => nft.lift().await,
        None => {
            let node = args
                .node
                .ok_or_else(|| anyhow::anyhow!("--node (or NODE_NAME) is required"))?;
            let agent = crate::agent::Agent {
                node,
                spare: args.spare,
                nft,
                restore_grace: args.restore_grace,
            };
            crate::agent::run(client().await?, agent).await
        }
    }
}

async fn stand_down_cmd(args: StandDownArgs) -> anyhow::Result<ExitCode> {
    let client = client().await?;
    let opts = crate::standdown::Options {
        reason: args.reason,
        timeout: args.timeout,
        poll: args.poll,
        concurrency: crate::fault::DEFAULT_WRITE_CONCURRENCY,
    };
    match crate::standdown::stand_down(&client, &opts).await {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("stand-down: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn plan_cmd(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let spec = plan_spec(args.file.as_deref())?;
    // A spec that cannot be read is said before the cluster is.
    let warnings = match &args.file {
        Some(_) => crate::spec::parse(&spec, None)
            .map_err(|e| anyhow::Error::new(run::UsageError(e)))?
            .warnings(),
        None => vec![],
    };
    let client = client().await?;
    let req = plan_request(&spec, &args)?;
    let opts = collect::Options {
        measure_capacity: !args.no_capacity,
        concurrency: collect::DEFAULT_CONCURRENCY,
        slos: spec.slos.clone(),
        api_server: req.power_loss,
        ..Default::default()
    };
    let snap = collect::snapshot(&client, &req.zone, &req.topology_key, &opts).await?;
    let (req, snap, mut p) = plan::plan_off_runtime(req, snap).await;
    p.warnings.extend(warnings);
    let guards = plan::check_guards(&req, &p, &snap);
    let report =
        serde_json::json!({ "plan": &p, "refusal": guards.as_ref().err().map(|r| r.0.clone()) });
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Dot => print!("{}", p.dependencies.dot(&p.zone)),
        Output::Table => print!(
            "{}",
            plan_table(&req, &p, guards.as_ref().err(), args.file.is_some())
        ),
    }
    Ok(if guards.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The spec `plan` starts from: the file's, or without one the spec of an
/// experiment that names nothing (every field but the zone has a default).
fn plan_spec(file: Option<&str>) -> anyhow::Result<DataCenterFailureSpec> {
    Ok(match file {
        Some(path) => run::read_experiment(path)?.spec,
        None => serde_json::from_value(serde_json::json!({ "zone": "" }))?,
    })
}

/// What `plan` asks for: the spec's request, with the command line's
/// namespaces, selector, zone and topology key over it.
fn plan_request(spec: &DataCenterFailureSpec, args: &PlanArgs) -> anyhow::Result<Request> {
    let mut target = spec.target.clone();
    if !args.namespaces.is_empty() {
        target.namespaces = args.namespaces.clone();
    }
    if let Some(ex) = &args.exclude_namespaces {
        target.exclude_namespaces = ex.clone();
    }
    let mut scope = Scope::from_target(&target, None).map_err(anyhow::Error::msg)?;
    if let Some(sel) = &args.selector {
        scope.selector =
            Some(plan::parse_selector(sel).map_err(|e| anyhow::anyhow!("--selector: {e}"))?);
    }
    let mut req = Request::from_spec(spec, scope);
    if let Some(zone) = &args.zone {
        req.zone = zone.clone();
    }
    if let Some(key) = &args.topology_key {
        req.topology_key = key.clone();
    }
    Ok(req)
}

fn plan_table(
    req: &Request,
    p: &plan::Plan,
    refusal: Option<&plan::Refusal>,
    own_guards: bool,
) -> String {
    let mut s = String::new();
    table_zone(&mut s, req, p);
    table_section(
        &mut s,
        "WORKLOADS THAT LOSE EVERY READY REPLICA",
        &p.lost_workloads,
        |w| {
            format!(
                "{:<12} {:<40} {} of {} ready replicas in the zone",
                w.kind, w.name, w.ready_in_zone, w.ready_total
            )
        },
    );
    table_section(
        &mut s,
        "PODS PINNED TO THE ZONE: cannot run anywhere else",
        &p.pinned,
        |x| format!("{:<48} {}", x.pod, x.reason),
    );
    table_section(
        &mut s,
        "WORKLOADS WHOSE REPLACEMENTS CANNOT BE SCHEDULED",
        &p.unplaceable,
        |u| {
            format!(
                "{:<40} {} of {} replacements: {}",
                u.workload, u.unplaceable, u.lost, u.rule
            )
        },
    );
    table_section(
        &mut s,
        "PODDISRUPTIONBUDGETS A FIRE WOULD VIOLATE",
        &p.pdbs_violated,
        String::clone,
    );
    table_capacity(&mut s, p);
    if !p.slo_predictions.is_empty() {
        table_section(&mut s, "SLO PREDICTIONS", &p.slo_predictions, |x| {
            let v = x
                .verdict
                .map(|v| v.to_string())
                .unwrap_or_else(|| "unknown".into());
            format!("{:<18} {:<13} {}", x.slo, v, x.why)
        });
    }
    let deps = p.dependencies.lines();
    if !deps.is_empty() {
        table_section(
            &mut s,
            "SERVICE DEPENDENCIES: read from the workloads' env, args and ConfigMaps",
            &deps,
            String::clone,
        );
    }
    if !p.warnings.is_empty() {
        table_section(&mut s, "WARNINGS", &p.warnings, String::clone);
    }
    let which = if own_guards {
        "the experiment's guards"
    } else {
        "default guards"
    };
    let _ = match refusal {
        Some(r) => writeln!(s, "\nGUARDS  would refuse: {r}"),
        None => writeln!(s, "\nGUARDS  pass (with {which})"),
    };
    s
}

/// The plan table's head: the zone's nodes and pods.
fn table_zone(s: &mut String, req: &Request, p: &plan::Plan) {
    let _ = writeln!(
        s,
        "ZONE {} ({}={}): {} of {} nodes",
        p.zone,
        req.topology_key,
        p.zone,
        p.nodes.len(),
        p.nodes_in_cluster
    );
    if !p.already_cordoned.is_empty() {
        let _ = writeln!(
            s,
            "  already cordoned (left as they are): {}",
            p.already_cordoned.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "PODS  {} would be killed, {} spared",
        p.pods_in_scope.len(),
        p.pods_spared.len()
    );
}

/// A section of the plan table: its title and count, then a line per item.
fn table_section<T>(s: &mut String, title: &str, items: &[T], line: impl Fn(&T) -> String) {
    let _ = writeln!(s, "\n{title} ({})", items.len());
    for item in items {
        let _ = writeln!(s, "  {}", line(item));
    }
}

/// The plan table's capacity line: what the displaced pods need, and what
/// is free outside the zone when it was measured.
fn table_capacity(s: &mut String, p: &plan::Plan) {
    let need = p.capacity_needed;
    match p.capacity_free {
        Some(free) => {
            let ok = if p.capacity_sufficient() == Some(true) {
                "enough"
            } else {
                "NOT ENOUGH"
            };
            let _ = writeln!(
                s,
                "\nCAPACITY OUTSIDE THE ZONE  need {}m CPU, {} MiB; free {}m CPU, {} MiB: {ok}",
                need.cpu_millis,
                need.memory_bytes >> 20,
                free.cpu_millis,
                free.memory_bytes >> 20
            );
        }
        None => {
            let _ = writeln!(
                s,
                "\nCAPACITY OUTSIDE THE ZONE  need {}m CPU, {} MiB; not measured",
                need.cpu_millis,
                need.memory_bytes >> 20
            );
        }
    }
}

async fn run_cmd(args: RunArgs) -> anyhow::Result<ExitCode> {
    let exp = run::read_experiment(&args.file)?;
    let client = client().await?;
    let name = exp.name_any();
    let applied = run::apply(&client, &exp).await?;
    eprintln!(
        "datacenterfailure.chaos.firedrill.dev/{name} applied (zone {})",
        applied.spec.zone
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let done = run::follow(&client, &name, args.timeout).await?;
    let rec = run::recording(&done, &client).await;
    println!(
        "\n{}",
        run::write_reports(&done, &rec, &args.files.outputs())?
    );
    Ok(ExitCode::from(run::exit_code(&done)))
}

async fn report_cmd(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = client().await?;
    let api = kube::Api::<api::DataCenterFailure>::all(client.clone());
    let exp = api
        .get_opt(&args.name)
        .await?
        .ok_or_else(|| run::UsageError(format!("datacenterfailure {} not found", args.name)))?;
    let rec = run::recording(&exp, &client).await;
    match args.output {
        ReportOutput::Table => {
            println!("{}", run::write_reports(&exp, &rec, &args.files.outputs())?)
        }
        ReportOutput::Json => {
            run::write_reports(&exp, &rec, &args.files.outputs())?;
            let input = crate::report::Input::new(&exp, &rec);
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::report::json(&input))?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn crd(dir: Option<PathBuf>) -> anyhow::Result<()> {
    match dir {
        None => print!("{}", api::crds_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (file, yaml) in api::crd_files()? {
                std::fs::write(dir.join(file), yaml)?;
            }
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    fn plan_args(argv: &[&str]) -> PlanArgs {
        let cli = Cli::try_parse_from([&["firedrill", "plan"], argv].concat()).unwrap();
        match cli.command {
            Command::Plan(args) => args,
            _ => unreachable!("a plan command"),
        }
    }

    #[test]
    fn plan_without_a_file_asks_for_the_defaults_and_the_flags() {
        let args = plan_args(&["--zone", "zone-b", "-n", "shop", "-l", "app=web"]);
        let req = plan_request(&plan_spec(None).unwrap(), &args).unwrap();
        assert_eq!(req.zone, "zone-b");
        assert_eq!(req.topology_key, api::default_topology_key());
        assert_eq!(req.guards, api::GuardSpec::default());
        assert!(!req.power_loss);
        assert_eq!(req.scope.namespaces, ["shop".to_string()].into());
        assert!(req.scope.exclude_namespaces.is_empty());
        assert_eq!(
            req.scope.selector,
            Some(plan::parse_selector("app=web").unwrap())
        );
        assert!(!req.scope.include_daemon_sets);
        assert_eq!(req.scope.operator_namespace, None);
    }

    #[test]
    fn plan_flags_override_the_spec() {
        let spec: DataCenterFailureSpec = serde_json::from_value(serde_json::json!({
            "zone": "zone-a", "topologyKey": "example.com/dc",
            "fault": {"mode": "PowerLoss"}, "guards": {"maxNodes": 3},
            "target": {"namespaces": ["a"], "excludeNamespaces": ["b"]}
        }))
        .unwrap();
        let req = plan_request(
            &spec,
            &plan_args(&["-f", "drill.yaml", "--exclude-namespace", "c"]),
        )
        .unwrap();
        assert_eq!(
            (req.zone.as_str(), req.topology_key.as_str()),
            ("zone-a", "example.com/dc")
        );
        assert!(req.power_loss);
        assert_eq!(req.guards.max_nodes, Some(3));
        assert_eq!(req.scope.namespaces, ["a".to_string()].into());
        assert_eq!(req.scope.exclude_namespaces, ["c".to_string()].into());
        let req = plan_request(
            &spec,
            &plan_args(&["-f", "-", "--zone", "dc-2", "--topology-key", "k"]),
        )
        .unwrap();
        assert_eq!(
            (req.zone.as_str(), req.topology_key.as_str()),
            ("dc-2", "k")
        );
        assert_eq!(req.scope.exclude_namespaces, ["b".to_string()].into());
    }
}
