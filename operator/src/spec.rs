//! The spec, parsed once: a `DataCenterFailure`'s strings become a typed,
//! checked value at the edge, and everything downstream (the state machine,
//! the probe runner, the verdict, the report, the CLI) reads that value.
//!
//! The invariant: nothing after [`parse`] parses a duration or picks a
//! fallback. A value the schema should have refused (an object written
//! under an older CRD, say) is an error naming the field, never a silent 0.

use crate::api::{DataCenterFailureSpec, SloSpec, parse_duration};
use crate::plan::Scope;
use std::time::Duration;

/// A checked `DataCenterFailure` spec.
#[derive(Clone, Debug)]
pub struct Checked {
    /// How long the zone stays dark.
    pub duration: Duration,
    /// How long every probe must be healthy before the fault.
    pub baseline: Duration,
    /// How long the probes keep running after the restore (zero: not at all).
    pub observe: Duration,
    /// What the fault may touch.
    pub scope: Scope,
    /// The SLOs, in the spec's order.
    pub slos: Vec<Slo>,
}

impl Checked {
    /// What the drill as written cannot show, said before it runs: an SLO
    /// whose recovery-time objective is longer than the dark window passes
    /// on time to recover even if the service never fails over, because the
    /// zone comes back first.
    pub fn warnings(&self) -> Vec<String> {
        self.slos
            .iter()
            .filter(|s| s.rto > self.duration)
            .map(|s| {
                format!(
                    "SLO {}: its recoveryTimeObjective ({}) is longer than the dark window (duration {:?}): the zone comes back before a recovery that slow could be told from none; shorten the objective or lengthen the duration",
                    s.spec.name, s.spec.recovery_time_objective, self.duration
                )
            })
            .collect()
    }
}

/// One SLO with its times parsed.
#[derive(Clone, Debug)]
pub struct Slo {
    pub spec: SloSpec,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// The recovery-time objective.
    pub rto: Duration,
    /// For a guard SLO: how long it may stay breached before the fault ends.
    pub tolerance: Option<Duration>,
    /// The recovery-point objective (a write probe's only).
    pub rpo: Option<Duration>,
    /// A write probe's: how long reading its writes back may take.
    pub read_deadline: Option<Duration>,
}

impl Slo {
    /// Parse one SLO's times; the error names the field.
    pub fn parse(slo: &SloSpec) -> Result<Self, String> {
        let field = |f: &str, v: &str| {
            parse_duration(v).map_err(|e| format!("spec.slos[{}].{f}: {e}", slo.name))
        };
        Ok(Slo {
            interval: field("interval", &slo.interval)?,
            timeout: field("timeout", &slo.timeout)?,
            rto: field("recoveryTimeObjective", &slo.recovery_time_objective)?,
            tolerance: slo
                .guard
                .as_ref()
                .map(|g| field("guard.tolerance", &g.tolerance))
                .transpose()?,
            rpo: slo
                .recovery_point_objective
                .as_deref()
                .map(|v| field("recoveryPointObjective", v))
                .transpose()?,
            read_deadline: slo
                .probe
                .write
                .as_ref()
                .map(|w| field("probe.write.readDeadline", &w.read_deadline))
                .transpose()?,
            spec: slo.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

/// Parse every SLO of a spec (for readers that need only the SLOs, such as
/// the report of a finished experiment).
pub fn slos(spec: &DataCenterFailureSpec) -> Result<Vec<Slo>, String> {
    spec.slos.iter().map(Slo::parse).collect()
}

/// Check everything about a spec's values that the API server's schema
/// cannot: the durations, that `dependsOn` has no cycle, and the target's
/// selector. The first problem, naming the field. (What the probes may reach
/// is the probe policy's to check: [`crate::probe`].)
pub fn parse(
    spec: &DataCenterFailureSpec,
    operator_namespace: Option<String>,
) -> Result<Checked, String> {
    let top = |f: &str, v: &str| parse_duration(v).map_err(|e| format!("spec.{f}: {e}"));
    let checked = Checked {
        duration: top("duration", &spec.duration)?,
        baseline: top("baseline", &spec.baseline)?,
        observe: spec
            .observe
            .as_deref()
            .map(|o| top("observe", o))
            .transpose()?
            .unwrap_or_default(),
        slos: slos(spec)?,
        scope: Scope::from_target(&spec.target, operator_namespace)?,
    };
    if let Some(cycle) = dependency_cycle(&spec.slos) {
        return Err(format!(
            "spec.slos[{}].dependsOn: {} is a cycle; an SLO cannot depend on itself, even through others",
            cycle[0],
            cycle.join(" -> ")
        ));
    }
    Ok(checked)
}

/// The first cycle in the SLOs' `dependsOn`, as the names along it with the
/// first repeated at the end (`a -> b -> a`), from where a walk along
/// `dependsOn`, in the spec's order, first meets it. Names of no SLO are left
/// to the schema.
fn dependency_cycle(slos: &[SloSpec]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let index = |name: &str| slos.iter().position(|s| s.name == name);
    let mut mark = vec![Mark::New; slos.len()];
    // Depth first, without recursion: the path, and how far along each
    // SLO's dependsOn the walk from it has got.
    for start in 0..slos.len() {
        if mark[start] != Mark::New {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(top) = path.last_mut() {
            let at = top.0;
            let Some(dep) = slos[at].depends_on.get(top.1) else {
                mark[at] = Mark::Done;
                path.pop();
                continue;
            };
            top.1 += 1;
            let Some(d) = index(dep) else { continue };
            match mark[d] {
                Mark::Done => {}
                Mark::New => {
                    mark[d] = Mark::OnPath;
                    path.push((d, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|(i, _)| *i == d).unwrap_or(0);
                    let mut names: Vec<String> = path[from..]
                        .iter()
                        .map(|(i, _)| slos[*i].name.clone())
                        .collect();
                    names.push(slos[d].name.clone());
                    return Some(names);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> DataCenterFailureSpec {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "zone": "zone-a", "duration": "30s", "baseline": "5s", "observe": "1m",
            "slos": [{"name": "login", "interval": "250ms", "timeout": "2s",
                      "recoveryTimeObjective": "20s", "guard": {"tolerance": "3s"},
                      "probe": {"tcp": {"host": "login", "port": 80}}}]
        })
    }

    #[test]
    fn an_objective_longer_than_the_dark_window_is_warned_of() {
        assert!(parse(&spec(good()), None).unwrap().warnings().is_empty());
        let mut v = good();
        v["slos"][0]["recoveryTimeObjective"] = "1h".into();
        let w = parse(&spec(v.clone()), None).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("SLO login: its recoveryTimeObjective (1h) is longer than the dark window (duration 30s)"),
            "{}",
            w[0]
        );
        // Equal is showable: the zone is dark for exactly that long.
        v["slos"][0]["recoveryTimeObjective"] = "30s".into();
        assert!(parse(&spec(v), None).unwrap().warnings().is_empty());
    }

    #[test]
    fn every_time_is_parsed_once_into_its_field() {
        let c = parse(&spec(good()), None).unwrap();
        assert_eq!(c.duration, Duration::from_secs(30));
        assert_eq!(c.baseline, Duration::from_secs(5));
        assert_eq!(c.observe, Duration::from_secs(60));
        let s = &c.slos[0];
        assert_eq!(s.name(), "login");
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.rto, Duration::from_secs(20));
        assert_eq!(s.tolerance, Some(Duration::from_secs(3)));
        assert_eq!((s.rpo, s.read_deadline), (None, None));
    }

    #[test]
    fn a_write_probe_has_its_objective_and_read_deadline_parsed() {
        let mut v = good();
        v["slos"][0]["probe"] = serde_json::json!({"write": {
            "url": "http://ledger.pay/records", "readUrl": "http://ledger.pay/records/{{id}}",
            "readDeadline": "30s"}});
        v["slos"][0]["recoveryPointObjective"] = "0s".into();
        let s = &parse(&spec(v.clone()), None).unwrap().slos[0];
        assert_eq!(s.rpo, Some(Duration::ZERO));
        assert_eq!(s.read_deadline, Some(Duration::from_secs(30)));
        v["slos"][0]["recoveryPointObjective"] = "now".into();
        let err = parse(&spec(v), None).unwrap_err();
        assert!(
            err.starts_with("spec.slos[login].recoveryPointObjective"),
            "{err}"
        );
    }

    #[test]
    fn no_observe_window_and_no_guard_are_none_not_errors() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("observe");
        v["slos"][0].as_object_mut().unwrap().remove("guard");
        let c = parse(&spec(v), None).unwrap();
        assert_eq!(c.observe, Duration::ZERO);
        assert_eq!(c.slos[0].tolerance, None);
    }

    #[test]
    fn an_unreadable_value_is_an_error_naming_its_field_never_a_zero() {
        for (path, bad, field) in [
            ("/duration", "ten", "spec.duration"),
            ("/baseline", "5", "spec.baseline"),
            ("/observe", "-1m", "spec.observe"),
            ("/slos/0/interval", "fast", "spec.slos[login].interval"),
            ("/slos/0/timeout", "1 s", "spec.slos[login].timeout"),
            (
                "/slos/0/recoveryTimeObjective",
                "soon",
                "spec.slos[login].recoveryTimeObjective",
            ),
            (
                "/slos/0/guard/tolerance",
                "3x",
                "spec.slos[login].guard.tolerance",
            ),
        ] {
            let mut v = good();
            *v.pointer_mut(path).unwrap() = bad.into();
            let err = parse(&spec(v), None).unwrap_err();
            assert!(err.starts_with(field), "{path}={bad}: {err}");
        }
    }

    fn with_dependencies(deps: &[(&str, &[&str])]) -> DataCenterFailureSpec {
        let slos: Vec<serde_json::Value> = deps
            .iter()
            .map(|(name, on)| {
                serde_json::json!({"name": name, "recoveryTimeObjective": "20s", "dependsOn": on,
                                   "probe": {"tcp": {"host": "h", "port": 1}}})
            })
            .collect();
        let mut v = good();
        v["slos"] = slos.into();
        spec(v)
    }

    #[test]
    fn a_cycle_in_depends_on_is_refused_naming_an_slo_on_it() {
        for (deps, err) in [
            (
                vec![("a", &["b"][..]), ("b", &["a"][..])],
                "spec.slos[a].dependsOn: a -> b -> a is a cycle",
            ),
            (
                vec![("a", &["b"][..]), ("b", &["c"][..]), ("c", &["a"][..])],
                "spec.slos[a].dependsOn: a -> b -> c -> a is a cycle",
            ),
            // Reached from an SLO that is not on it: the cycle alone is named.
            (
                vec![
                    ("web", &["auth"][..]),
                    ("auth", &["db", "cache"][..]),
                    ("db", &[][..]),
                    ("cache", &["auth"][..]),
                ],
                "spec.slos[auth].dependsOn: auth -> cache -> auth is a cycle",
            ),
        ] {
            let got = parse(&with_dependencies(&deps), None).unwrap_err();
            assert!(got.starts_with(err), "{deps:?}: {got}");
        }
        // A diamond is no cycle.
        let diamond = with_dependencies(&[
            ("web", &["auth", "search"]),
            ("auth", &["db"]),
            ("search", &["db"]),
            ("db", &[]),
        ]);
        assert!(parse(&diamond, None).is_ok());
    }
}
