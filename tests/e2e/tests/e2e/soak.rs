//! Fault soak: at seeded random moments across every phase, SIGKILL the
//! operator (and restart it), stop the API server (and start it again), or
//! pause etcd (SIGSTOP, then SIGCONT); and check after every drill that
//! nothing was left behind or harmed:
//!
//! - nodes left with a firedrill mark, taint or our cordon: 0
//! - admin cordons lost: 0
//! - pods outside the scope deleted: 0
//! - experiments not ended Completed/Aborted with a reason: 0
//! - wrong verdicts: 0. The service measured keeps replicas outside the
//!   zone, so a completed drill is Passed, or Inconclusive with the reason
//!   (a crash or an outage can leave too little of the dark window
//!   measured); Failed, or no verdict, is wrong.
//!
//! `FIREDRILL_SOAK_ROUNDS` (default 5: the `make test` version; `make soak`
//! runs 20) faults in all, `FIREDRILL_SOAK_OUTAGES` of them (default 1;
//! `make soak` 8) an API server stop or an etcd pause at rounds the seed
//! picks, the rest SIGKILLs; `FIREDRILL_SOAK_SEED` (default 1) sets the run.

use firedrill_e2e::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One fault a round injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// SIGKILL the operator, start it again after 0.2-1.7 s.
    Kill,
    /// Stop the API server for 3-15 s.
    ApiServerStop,
    /// SIGSTOP etcd for 2-10 s, then SIGCONT.
    EtcdPause,
}

/// Which rounds inject an outage instead of a kill: `outages` of `rounds`,
/// picked by `rng`; the first two outages are one of each kind, the rest
/// either.
fn plan_faults(rng: &mut Rng, rounds: u64, outages: u64) -> Vec<Fault> {
    let mut faults = vec![Fault::Kill; rounds as usize];
    let mut placed = 0;
    while placed < outages.min(rounds) {
        let at = rng.below(rounds) as usize;
        if faults[at] != Fault::Kill {
            continue;
        }
        faults[at] = match placed {
            0 => Fault::ApiServerStop,
            1 => Fault::EtcdPause,
            _ if rng.below(2) == 0 => Fault::ApiServerStop,
            _ => Fault::EtcdPause,
        };
        placed += 1;
    }
    faults
}

/// Starts the API server and resumes etcd if a round left either down.
struct ControlPlaneBack;

impl Drop for ControlPlaneBack {
    fn drop(&mut self) {
        testbed(&["etcd", "resume"]);
        if !testbed(&["status"])
            .stdout
            .contains("kube-apiserver: running")
        {
            testbed(&["apiserver", "start"]);
        }
    }
}

const PHASES: [&str; 6] = [
    "Planning",
    "Baseline",
    "Injecting",
    "ZoneDown",
    "Restoring",
    "Completed",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn phase_index(phase: &str) -> usize {
    PHASES.iter().position(|p| *p == phase).unwrap_or(0)
}

#[test]
fn crashes_and_control_plane_outages_at_random_moments_leave_nothing_behind() {
    let _lock = zones_lock();
    let rounds = env_u64("FIREDRILL_SOAK_ROUNDS", 5);
    let outages = env_u64("FIREDRILL_SOAK_OUTAGES", 1);
    let seed = env_u64("FIREDRILL_SOAK_SEED", 1);
    let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    let faults = plan_faults(&mut rng, rounds, outages);
    let _back = ControlPlaneBack;
    let ns = setup_chat_and_login("e2e-soak");
    let bystanders = Namespace::create("e2e-soak-bystander");
    apply(&service_and_deployment(
        &bystanders.0,
        "other",
        2,
        "",
        "      nodeSelector: {topology.kubernetes.io/zone: zone-a}",
    ))
    .expect_ok("bystanders");
    wait_for("bystanders Ready", Duration::from_secs(60), || {
        (ready_pods(&bystanders.0, "app=other").len() == 2).then_some(())
    });
    let bystander_uids = pod_uids(&bystanders.0, "");
    let zone_a = nodes_in("zone-a");
    let admin = AdminCordon::cordon(&zone_a[..1]);

    let drill = |name: &str| {
        Drill::new(name, "zone-a")
            .duration("4s")
            .baseline("2s")
            .namespace(&ns.0)
            .slo(
                Slo::new("chat", "1m")
                    .interval("200ms")
                    .service(&ns.0, "chat"),
            )
    };
    let start_op = || Operator::start(&["--debug-inject-pause=400ms", "--leader-elect=false"]);
    let mut op = start_op();
    let mut by_fault: BTreeMap<(Fault, String), u64> = BTreeMap::new();
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    let (mut round, mut drills) = (0u64, 0u64);
    let (mut traces_left, mut cordons_lost, mut outsiders_killed, mut unfinished, mut wrong) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    let mut current: Option<String> = None;
    while round < rounds || current.is_some() {
        let name = match &current {
            Some(n) => n.clone(),
            None => {
                let n = format!("soak-{drills}");
                drills += 1;
                apply(&drill(&n).yaml()).expect_ok("drill");
                current = Some(n.clone());
                n
            }
        };
        if round < rounds {
            // Aim at a phase, then at a random moment inside it.
            let target = PHASES[rng.below(5) as usize];
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let now = dcf_field(&name, ".status.phase");
                if phase_index(&now) >= phase_index(target) || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(rng.below(600)));
            let at = dcf_field(&name, ".status.phase");
            let at = if at.is_empty() { "Pending".into() } else { at };
            let fault = faults[round as usize];
            let held = match fault {
                Fault::Kill => {
                    op.crash();
                    let down = Duration::from_millis(200 + rng.below(1500));
                    std::thread::sleep(down);
                    op = start_op();
                    down
                }
                Fault::ApiServerStop => {
                    let down = Duration::from_millis(3000 + rng.below(12_000));
                    testbed(&["apiserver", "stop"]).expect_ok("stopping the API server");
                    std::thread::sleep(down);
                    testbed(&["apiserver", "start"]).expect_ok("starting the API server");
                    down
                }
                Fault::EtcdPause => {
                    let down = Duration::from_millis(2000 + rng.below(8000));
                    testbed(&["etcd", "pause"]).expect_ok("pausing etcd");
                    std::thread::sleep(down);
                    testbed(&["etcd", "resume"]).expect_ok("resuming etcd");
                    down
                }
            };
            round += 1;
            eprintln!(
                "soak round {round}/{rounds}: {fault:?} in {at} of {name} for {:.1}s",
                held.as_secs_f64()
            );
            *by_fault.entry((fault, at)).or_default() += 1;
        }
        let phase = dcf_field(&name, ".status.phase");
        let terminal = matches!(phase.as_str(), "Completed" | "Aborted" | "Failed");
        if terminal || round >= rounds {
            if !terminal {
                wait_for("the drill to end", Duration::from_secs(120), || {
                    matches!(
                        dcf_field(&name, ".status.phase").as_str(),
                        "Completed" | "Aborted" | "Failed"
                    )
                    .then_some(())
                });
            }
            // Everything is judged once the drill has ended.
            let phase = dcf_field(&name, ".status.phase");
            let reason = dcf_field(&name, ".status.reason");
            if !matches!(phase.as_str(), "Completed" | "Aborted") || reason.is_empty() {
                eprintln!("{name}: ended {phase:?} with reason {reason:?}");
                unfinished += 1;
            }
            if phase == "Completed" {
                let verdict = dcf_field(&name, ".status.verdict");
                if !matches!(verdict.as_str(), "Passed" | "Inconclusive") {
                    eprintln!("{name}: verdict {verdict:?} ({reason})");
                    wrong += 1;
                }
                *verdicts.entry(verdict).or_default() += 1;
            }
            let traces = firedrill_traces_on_nodes();
            traces_left += traces.len();
            let cordoned = cordoned_nodes();
            if !cordoned.contains(&zone_a[0]) {
                cordons_lost += 1;
                kubectl(&["cordon", &zone_a[0]], None);
            }
            let ours = cordoned.iter().filter(|n| **n != zone_a[0]).count();
            traces_left += ours;
            let now = pod_uids(&bystanders.0, "");
            outsiders_killed += bystander_uids
                .iter()
                .filter(|(p, u)| now.get(*p) != Some(u))
                .count();
            kubectl(
                &["delete", "dcf", &name, "--wait=true", "--timeout=60s"],
                None,
            );
            current = None;
        }
    }
    op.stop();
    let report = format!(
        "soak (seed {seed}): {round} rounds over {drills} drills in {:.0}s; faults by kind and phase {by_fault:?}; verdicts of completed drills {verdicts:?}; nodes left with our mark/taint/cordon: {traces_left}; admin cordons lost: {cordons_lost}; pods outside the scope deleted: {outsiders_killed}; experiments not ended Completed/Aborted with a reason: {unfinished}; wrong verdicts: {wrong}",
        started.elapsed().as_secs_f64()
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("FIREDRILL_SOAK_REPORT") {
        std::fs::write(path, format!("{report}\n")).ok();
    }
    assert_eq!(
        (
            traces_left,
            cordons_lost,
            outsiders_killed,
            unfinished,
            wrong
        ),
        (0, 0, 0, 0, 0),
        "{report}"
    );
    drop(admin);
}
