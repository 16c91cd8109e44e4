//! Sweep planning: which trials a submitted sweep becomes on the fleet that
//! is connected now (a pure function, [`plan_sweep`]), and submitting and
//! cancelling sweeps.

use super::core::{Core, SweepMeta, SweepSummary};
use super::effects::{Effects, SweepEvent, ToAgent, Write};
use super::records::{checked_size, pin_of, SweepRecord, SweepState, ANY_CLASS};
use super::search_run::{ClassSearch, SearchRun};
use crate::error::ApiError;
use chimera_domain::catalog::Workload;
use chimera_domain::device::Device;
use chimera_domain::models::eval_references;
use chimera_domain::order::{default_seed, interleave};
use chimera_domain::params::Params;
use chimera_domain::results::{TrialRecord, TrialState};
use chimera_domain::search::Proposal;
use chimera_domain::spec::{ParsedSweep, Placement, SpecError};
use chimera_domain::{AgentId, SweepId, TrialId, TrialKey, TrialRef};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tracing::{info, warn};

/// A device of the fleet, as planning sees it.
#[derive(Clone, Copy, Debug)]
pub struct FleetDevice<'a> {
    /// Usable, on a connected agent that is not draining: trials may be
    /// planned on it (the others only name their class in errors).
    pub schedulable: bool,
    pub agent: &'a AgentId,
    pub host: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub device: &'a Device,
}

impl FleetDevice<'_> {
    fn view(&self) -> chimera_domain::device::DeviceView<'_> {
        self.device.view(&self.agent.0, self.host, self.labels)
    }

    fn pin(&self) -> String {
        pin_of(&self.agent.0, &self.device.id)
    }
}

/// What a sweep becomes: its trials (eval references first), the
/// configurations each class may run, and, for adaptive sweeps, the search
/// that adds later generations.
pub(super) struct Plan {
    pub trials: Vec<TrialRecord>,
    pub class_configs: BTreeMap<String, Vec<u32>>,
    pub search: Option<SearchRun>,
    /// Classes (or devices) the sweep runs on.
    pub targets: usize,
}

/// For an eval sweep, the domain's reference numbering
/// ([`eval_references`]): the reference configurations, and per
/// configuration the id of the reference trial it is scored against. Other
/// workloads: none.
pub(super) fn references(parsed: &ParsedSweep) -> (Vec<Params>, Vec<Option<String>>) {
    if parsed.spec.workload != Workload::Eval {
        return (Vec::new(), vec![None; parsed.configs.len()]);
    }
    let refs = eval_references(&parsed.configs);
    let depends = refs
        .depends_on()
        .into_iter()
        .map(|d| d.map(|t| t.0))
        .collect();
    (refs.references, depends)
}

/// The seed of the sweep's run order: the spec's `order_seed`, or one
/// derived from the sweep's id.
pub(super) fn order_seed(id: &SweepId, parsed: &ParsedSweep) -> u64 {
    parsed
        .spec
        .order_seed
        .unwrap_or_else(|| default_seed(&id.0))
}

/// Why a sweep waits: no connected device matches its target.
fn no_device(spec: &chimera_domain::spec::SweepSpec) -> String {
    format!(
        "a connected agent with a device matching target {}",
        serde_json::to_string(&spec.target).unwrap_or_else(|e| format!("(unprintable: {e})"))
    )
}

/// When no usable device of the fleet matches the sweep's target but some
/// present ones do that cannot run trials (a GPU of an agent built without
/// CUDA), the refusal naming them and why: waiting would wait forever.
fn only_unusable(parsed: &ParsedSweep, fleet: &[FleetDevice]) -> Option<ApiError> {
    let matching: Vec<&FleetDevice> = fleet
        .iter()
        .filter(|d| parsed.spec.target.matches(&d.view()))
        .collect();
    if matching.iter().any(|d| d.device.usable()) {
        return None;
    }
    let why: BTreeSet<String> = matching
        .iter()
        .filter_map(|d| {
            let reason = d.device.why_unusable()?;
            Some(format!("{} ({}): {reason}", d.pin(), d.device.class))
        })
        .collect();
    (!why.is_empty()).then(|| {
        ApiError::InvalidArgument(format!(
            "{}target: the devices matching {} cannot run trials: {}",
            at_line(parsed, "target"),
            serde_json::to_string(&parsed.spec.target)
                .unwrap_or_else(|e| format!("(unprintable: {e})")),
            why.into_iter().collect::<Vec<_>>().join("; ")
        ))
    })
}

/// `line N: ` where the spec first sets `key`, or nothing.
fn at_line(parsed: &ParsedSweep, key: &str) -> String {
    parsed
        .line_of(key)
        .map(|l| format!("line {l}: "))
        .unwrap_or_default()
}

/// Plans sweep `id` on `fleet` (errors name the lines of the spec's text);
/// `max_trials` the cap on trials per sweep. Refuses, naming
/// the field, a sweep no device matches, an op a class cannot run, or one
/// that expands past the cap (counted as it grows, before it is built).
pub(super) fn plan_sweep(
    id: &SweepId,
    parsed: &ParsedSweep,
    fleet: &[FleetDevice],
    max_trials: u64,
) -> Result<Plan, ApiError> {
    let spec = &parsed.spec;
    let workload = spec.workload.name();
    let seed = order_seed(id, parsed);
    // Device classes that match the target, with what each can run.
    let mut classes: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    // Every matching device, as (class, pin), for placement `all`.
    let mut devices: Vec<(String, String)> = Vec::new();
    // Conditional configurations (a variant's `when`) by the classes and
    // devices they are for.
    let conditional: Vec<usize> = (0..parsed.configs.len())
        .filter(|&i| parsed.conditions.get(i).is_some_and(Option::is_some))
        .collect();
    let mut applies: HashMap<String, HashSet<usize>> = HashMap::new();
    for d in fleet
        .iter()
        .filter(|d| d.schedulable && spec.target.matches(&d.view()))
    {
        let class = &d.device.class;
        classes
            .entry(class.clone())
            .or_default()
            .extend(d.device.capabilities.iter().cloned());
        let pin = d.pin();
        for &ci in &conditional {
            if let Some(Some(when)) = parsed.conditions.get(ci) {
                if when.matches(&d.view()) {
                    for key in [class, &pin] {
                        applies.entry(key.clone()).or_default().insert(ci);
                    }
                }
            }
        }
        devices.push((class.clone(), pin));
    }
    if classes.is_empty() {
        let known: BTreeSet<&str> = fleet.iter().map(|d| d.device.class.as_str()).collect();
        return Err(ApiError::InvalidArgument(format!(
            "{}target: no connected agent has a device matching {}; connected device classes: [{}]",
            at_line(parsed, "target"),
            serde_json::to_string(&spec.target).unwrap_or_else(|e| format!("(unprintable: {e})")),
            known.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let applicable = |key: &str, ci: usize| {
        !conditional.contains(&ci) || applies.get(key).is_some_and(|s| s.contains(&ci))
    };
    for (ci, config) in parsed.configs.iter().enumerate() {
        let op = config.get("op").map(|v| v.to_string()).unwrap_or_default();
        let cap = chimera_domain::catalog::capability(workload, config);
        let lacking: Vec<&String> = classes
            .iter()
            .filter(|(c, caps)| applicable(c, ci) && !caps.contains(&cap))
            .map(|(c, _)| c)
            .collect();
        let refuse = match spec.placement {
            Placement::EachClass | Placement::All => !lacking.is_empty(),
            Placement::Any => lacking.len() == classes.len(),
        };
        if refuse && workload == Workload::Serve.name() {
            let engine = cap.trim_start_matches("serve/");
            let e = SpecError::at(
                &parsed.source,
                "engine",
                "engine",
                Some(engine),
                format!(
                    "engine `{engine}` is not available on the agents of device class(es) {}{}",
                    lacking
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if engine == "candle" || engine == "openai" {
                        String::new()
                    } else {
                        format!("; start an agent with --engine {engine}=PATH")
                    }
                ),
            );
            return Err(ApiError::InvalidArgument(e.to_string()));
        }
        if refuse {
            let e = SpecError::at(
                &parsed.source,
                "op",
                "op",
                Some(&op),
                format!(
                    "{} of workload {workload} is not supported by the agents of device class(es) {}",
                    if op.is_empty() { "this configuration".to_owned() } else { format!("op `{op}`") },
                    lacking.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                ),
            );
            return Err(ApiError::InvalidArgument(e.to_string()));
        }
    }
    // Where each configuration runs: (class, the device it is pinned to).
    devices.sort();
    let targets: Vec<(String, Option<String>)> = match spec.placement {
        Placement::EachClass => classes.keys().map(|c| (c.clone(), None)).collect(),
        Placement::Any => vec![(ANY_CLASS.to_owned(), None)],
        Placement::All => devices.into_iter().map(|(c, pin)| (c, Some(pin))).collect(),
    };
    // Eval: every eval trial scored against a reference waits for it and
    // consumes its output; references run once, on any target device.
    let (references, depends) = references(parsed);
    let mut trials: Vec<TrialRecord> = references
        .iter()
        .enumerate()
        .map(|(ri, params)| {
            TrialRecord::pending(
                TrialId::nth(ri).0,
                id.0.clone(),
                ANY_CLASS.to_owned(),
                params.clone(),
                (parsed.configs.len() + ri) as u32,
                0,
            )
        })
        .collect();
    let mut search = spec
        .search
        .is_adaptive()
        .then(|| SearchRun::new(parsed, depends.clone()));
    // Grid and random: every configuration on every class now. Adaptive:
    // each class's first generation; the rest follows its results.
    let mut plan: Vec<((String, Option<String>), Proposal)> = Vec::new();
    let mut class_configs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    // Counted as the plan grows (checked): past the limit the submit is
    // refused before more is built or any trial exists.
    let over = |placements: usize| {
        (placements as u64)
            .checked_mul(u64::from(spec.repeats))
            .and_then(|n| n.checked_add(references.len() as u64))
            .is_none_or(|n| n > max_trials)
    };
    for target in &targets {
        let class = &target.0;
        // The class's (or pinned device's) own space when variants say
        // which devices they are for.
        let key = target.1.as_deref().unwrap_or(class);
        let mine: Vec<usize> = (0..parsed.configs.len())
            .filter(|&ci| applicable(key, ci))
            .collect();
        if mine.is_empty() {
            continue;
        }
        if !conditional.is_empty() && target.1.is_none() {
            class_configs.insert(class.clone(), mine.iter().map(|&i| i as u32).collect());
        }
        match &mut search {
            Some(run) => {
                run.classes.insert(class.clone(), ClassSearch::default());
                if let Some(subset) = class_configs.get(class) {
                    run.subsets.insert(class.clone(), subset.clone());
                }
                plan.extend(run.propose(class).into_iter().map(|p| (target.clone(), p)));
            }
            None => plan.extend(
                mine.into_iter()
                    .map(|config| (target.clone(), Proposal { config, rung: None })),
            ),
        }
        if over(plan.len()) {
            return Err(ApiError::InvalidArgument(format!(
                "{}the sweep expands into more than {max_trials} trials ({} or more configuration placements on the {} matching device class(es) or devices, x {} repeats); the limit is {max_trials} trials per sweep (--max-trials-per-sweep)",
                at_line(parsed, "repeats"),
                plan.len(),
                targets.len(),
                spec.repeats,
            )));
        }
    }
    if plan.is_empty() {
        return Err(ApiError::InvalidArgument(format!(
            "{}variants: no configuration is for a connected device (each variant's `when` matches none)",
            at_line(parsed, "variants"),
        )));
    }
    // Placements in a stable order (configuration, then class or device),
    // then run in seeded, interleaved rounds: every placement once before
    // any runs again, so drift spreads across configurations. Trial ids
    // number that order.
    plan.sort_by(|(a, p), (b, q)| (p.config, a).cmp(&(q.config, b)));
    for (i, repeat) in interleave(plan.len(), spec.repeats, seed) {
        let Some(((class, pinned), p)) = plan.get(i) else {
            continue;
        };
        let (Some(config), Some(depends_on)) =
            (parsed.configs.get(p.config), depends.get(p.config))
        else {
            continue;
        };
        trials.push(TrialRecord {
            depends_on: depends_on.clone(),
            rung: p.rung,
            pinned: pinned.clone(),
            ..TrialRecord::pending(
                TrialId::nth(trials.len()).0,
                id.0.clone(),
                class.clone(),
                config.clone(),
                p.config as u32,
                repeat,
            )
        });
        if let Some(c) = search.as_mut().and_then(|r| r.classes.get_mut(class)) {
            c.created += 1;
            c.open += 1;
        }
    }
    Ok(Plan {
        trials,
        class_configs,
        search,
        targets: targets.len(),
    })
}

impl Core {
    /// The fleet as planning sees it.
    fn fleet(&self) -> Vec<FleetDevice<'_>> {
        self.agents
            .iter()
            .flat_map(|(name, a)| {
                a.devices.iter().map(move |d| FleetDevice {
                    schedulable: a.connected && !a.draining && d.device.usable(),
                    agent: name,
                    host: &a.hostname,
                    labels: &a.labels,
                    device: &d.device,
                })
            })
            .collect()
    }

    /// Plans, stores and queues sweep `id` (a fresh ULID from the shell):
    /// the answer is its id and how many trials it starts with. When no
    /// connected agent has a device the target matches, the sweep is
    /// stored `waiting` with no trials (and started when one joins:
    /// [`Core::start_waiting`]), unless `wait` is false: then it is refused.
    pub fn submit(
        &mut self,
        id: SweepId,
        parsed: &ParsedSweep,
        trace: BTreeMap<String, String>,
        by: String,
        wait: bool,
        fx: &mut Effects,
    ) -> Result<(SweepId, u32), ApiError> {
        let active = self.sweeps.values().filter(|m| m.active()).count();
        if active >= self.config.limits.max_active_sweeps {
            return Err(ApiError::ResourceExhausted(format!(
                "{active} sweeps are running or waiting, the limit (--max-active-sweeps); wait for one to finish or cancel one"
            )));
        }
        let spec = &parsed.spec;
        let fleet = self.fleet();
        let matching = fleet
            .iter()
            .any(|d| d.schedulable && spec.target.matches(&d.view()));
        if let Some(refusal) = only_unusable(parsed, &fleet).filter(|_| !matching) {
            return Err(refusal);
        }
        let plan = if wait && !matching {
            None
        } else {
            Some(plan_sweep(
                &id,
                parsed,
                &fleet,
                self.config.limits.max_trials_per_sweep,
            )?)
        };
        let record = SweepRecord {
            id: id.0.clone(),
            name: spec.name.clone(),
            workload: spec.workload.name().to_owned(),
            spec_yaml: parsed.source.clone(),
            created_unix_ms: self.now.unix_ms,
            state: SweepState::Waiting,
            trials_total: 0,
            harness: spec.harness,
            placement: spec.placement,
            target: spec.target.clone(),
            search: spec.search.clone(),
            budget: spec.budget,
            class_configs: BTreeMap::new(),
            trace,
            submitted_by: Some(by),
            cancelled_by: None,
            order_seed: order_seed(&id, parsed),
            waiting_for: Some(no_device(spec)),
        };
        checked_size("the spec", &record)?;
        self.sweeps.insert(
            id.clone(),
            SweepMeta {
                record: record.clone(),
                counts: HashMap::new(),
                search: None,
            },
        );
        let total = match plan {
            Some(plan) => match self.start(&id, plan, fx) {
                Ok(total) => total,
                Err(e) => {
                    self.sweeps.remove(&id);
                    return Err(e);
                }
            },
            None => {
                info!(sweep = %id, target = ?spec.target, "sweep waits for a matching device");
                fx.writes.push(Write::Sweep(record));
                0
            }
        };
        if let Ok(sweep) = self.sweep(&id, false) {
            fx.events.push(SweepEvent { sweep, trial: None });
        }
        Ok((id, total))
    }

    /// Starts a stored sweep on its plan: its trials are stored and queued
    /// (references first) and it is running. Sizes are checked before
    /// anything changes; an error changes nothing.
    fn start(&mut self, id: &SweepId, plan: Plan, fx: &mut Effects) -> Result<u32, ApiError> {
        let total = u32::try_from(plan.trials.len()).map_err(|_| {
            ApiError::InvalidArgument(format!(
                "the sweep expands into {} trials",
                plan.trials.len()
            ))
        })?;
        for t in &plan.trials {
            checked_size("a trial of the sweep", t)?;
        }
        let meta = self
            .sweeps
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound(format!("sweep `{id}` not found")))?;
        let record = SweepRecord {
            state: SweepState::Running,
            trials_total: total,
            class_configs: plan.class_configs,
            waiting_for: None,
            ..meta.record.clone()
        };
        checked_size("the spec", &record)?;
        meta.record = record;
        meta.counts = HashMap::from([(TrialState::Pending, total)]);
        meta.search = plan.search;
        // References first, so their dependents find them live.
        for rec in plan.trials {
            self.add_trial(id, rec, fx);
        }
        // The sweep's record last: a store that applies a big batch in
        // pieces (etcd) never shows a sweep without all its trials.
        if let Some(meta) = self.sweeps.get(id) {
            fx.writes.push(Write::Sweep(meta.record.clone()));
        }
        info!(sweep = %id, trials = total, classes = plan.targets, "sweep started");
        Ok(total)
    }

    /// Starts the waiting sweeps a device that joined now matches (after an
    /// agent connects). One that matches but cannot be planned (an op the
    /// class cannot run, past the trial cap) keeps waiting, with why.
    pub(super) fn start_waiting(&mut self, fx: &mut Effects) {
        let mut waiting: Vec<SweepId> = self
            .sweeps
            .iter()
            .filter(|(_, m)| m.record.state == SweepState::Waiting)
            .map(|(id, _)| id.clone())
            .collect();
        waiting.sort();
        for id in waiting {
            let Some(source) = self.sweeps.get(&id).map(|m| m.record.spec_yaml.clone()) else {
                continue;
            };
            let outcome = match chimera_domain::spec::parse(&source) {
                Err(e) => Err(format!("the stored spec no longer parses: {e}")),
                Ok(parsed) => {
                    let fleet = self.fleet();
                    if !fleet
                        .iter()
                        .any(|d| d.schedulable && parsed.spec.target.matches(&d.view()))
                    {
                        continue;
                    }
                    plan_sweep(
                        &id,
                        &parsed,
                        &fleet,
                        self.config.limits.max_trials_per_sweep,
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|plan| self.start(&id, plan, fx).map_err(|e| e.to_string()))
                }
            };
            if let Err(why) = outcome {
                let Some(meta) = self.sweeps.get_mut(&id) else {
                    continue;
                };
                if meta.record.waiting_for.as_deref() == Some(why.as_str()) {
                    continue;
                }
                warn!(sweep = %id, reason = %why, "waiting sweep cannot start yet");
                meta.record.waiting_for = Some(why);
                fx.writes.push(Write::Sweep(meta.record.clone()));
            }
            if let Ok(sweep) = self.sweep(&id, false) {
                fx.events.push(SweepEvent { sweep, trial: None });
            }
        }
    }

    /// Cancels a running sweep: pending trials end, running ones are told to
    /// stop (their devices stay busy until the agent reports or its lease
    /// ends). Cancelling an ended sweep changes nothing.
    pub fn cancel(
        &mut self,
        id: &SweepId,
        by: String,
        fx: &mut Effects,
    ) -> Result<SweepSummary, ApiError> {
        let meta = self
            .sweeps
            .get_mut(id)
            .ok_or_else(|| ApiError::NotFound(format!("sweep `{id}` not found")))?;
        if !meta.active() {
            return self.sweep(id, false);
        }
        meta.record.state = SweepState::Cancelled;
        meta.record.waiting_for = None;
        meta.record.cancelled_by = Some(by);
        fx.writes.push(Write::Sweep(meta.record.clone()));
        let mut keys: Vec<TrialKey> = self
            .live
            .keys()
            .filter(|k| &k.sweep == id)
            .cloned()
            .collect();
        keys.sort();
        for key in keys {
            let Some(rec) = self.live.get(&key) else {
                continue;
            };
            if let (Some(agent), true) = (
                &rec.agent,
                matches!(rec.state, TrialState::Assigned | TrialState::Running),
            ) {
                let r = TrialRef {
                    key: key.clone(),
                    attempt: rec.attempt,
                };
                let agent = AgentId(agent.clone());
                if let Some(a) = self.agents.get(&agent).filter(|a| a.connected) {
                    fx.sends.push((agent, a.session, ToAgent::Cancel(r)));
                }
            }
            self.update(&key, fx, |t| t.state = TrialState::Cancelled);
        }
        self.artifacts.retain(|k, _| &k.sweep != id);
        info!(sweep = %id, "sweep cancelled");
        let sweep = self.sweep(id, false)?;
        fx.events.push(SweepEvent {
            sweep: sweep.clone(),
            trial: None,
        });
        Ok(sweep)
    }
}

#[cfg(test)]
#[path = "plan_unusable_tests.rs"]
mod unusable_tests;
