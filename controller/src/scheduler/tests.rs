//! The decision core's scenarios, without a network, a store or a sleep:
//! each step is a command at an injected time, and the effects it returns
//! are compared as text (`UPDATE_EXPECT=1 cargo test -p chimera-controller`
//! rewrites the snapshots; review the diff).

use super::core::{Core, Now};
use super::effects::Effects;
use super::records::{SweepRecord, SweepState};
use super::{AgentEvent, Hello, SchedulerConfig};
use crate::error::ApiError;
use chimera_domain::device::Device;
use chimera_domain::results::{Fingerprint, TrialOutput, TrialRecord, TrialState};
use chimera_domain::{AgentId, SweepId, TrialKey, TrialRef};
use expect_test::{expect, Expect};
use std::collections::BTreeMap;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(10);

fn config() -> SchedulerConfig {
    SchedulerConfig {
        limits: crate::Limits::default(),
        lease_ttl: TTL,
        store_retry: Duration::ZERO,
    }
}

/// A CPU device of class `class` that runs `caps`.
fn device(id: &str, class: &str, caps: &[&str]) -> Device {
    Device {
        id: id.to_owned(),
        kind: "cpu".to_owned(),
        vendor: "test".to_owned(),
        model: class.to_owned(),
        memory_bytes: 1 << 30,
        cores: 2,
        compute_capability: String::new(),
        driver_version: String::new(),
        class: class.to_owned(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        unusable_reason: String::new(),
    }
}

/// One CPU that runs matmul, of class `class`.
fn cpu(class: &str) -> Device {
    device("cpu", class, &["kernel/matmul"])
}

fn trial(sweep: &str, trial: &str, attempt: u32) -> TrialRef {
    TrialRef {
        key: TrialKey::new(sweep, trial),
        attempt,
    }
}

fn finished(r: TrialRef, gflops: f64) -> AgentEvent {
    AgentEvent::Finished {
        trial: r,
        output: Box::new(TrialOutput {
            metrics: BTreeMap::from([("gflop_per_s".to_owned(), gflops)]),
            fingerprint: Fingerprint::default(),
            wall_ms: 5.0,
            detail: None,
            artifact: Vec::new(),
        }),
    }
}

/// A matmul sweep of `shapes` shapes, `repeats` each, placed `placement`.
fn matmul(shapes: usize, repeats: u32, placement: &str) -> String {
    let shapes: Vec<String> = (1..=shapes).map(|i| format!("\"{i},64,64\"")).collect();
    format!(
        "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: [{}]\nrepeats: {repeats}\nplacement: {placement}\n",
        shapes.join(", ")
    )
}

/// The core under test, with its clock.
struct Sim {
    core: Core,
    t0: Now,
    next_lease: i64,
}

impl Sim {
    fn new() -> Sim {
        let t0 = Now::system();
        Sim {
            core: Core::new(config(), t0),
            t0,
            next_lease: 100,
        }
    }

    /// Sets the clock to `secs` after the start.
    fn at(&mut self, secs: u64) -> &mut Self {
        self.core.set_now(self.t0.after(Duration::from_secs(secs)));
        self
    }

    /// An agent says hello: its session, the attempts it keeps, the effects.
    fn hello(
        &mut self,
        name: &str,
        devices: Vec<Device>,
        running: Vec<TrialRef>,
    ) -> Result<(u64, Vec<TrialRef>, Effects), ApiError> {
        let hello = Hello {
            name: AgentId::from(name),
            version: "test".into(),
            hostname: format!("host-{name}"),
            devices,
            features: vec![],
            running,
            labels: BTreeMap::new(),
        };
        self.core.admit(&hello, false, false)?;
        self.next_lease += 1;
        let mut fx = Effects::default();
        let (session, kept) = self
            .core
            .connect(hello, self.next_lease, "test".into(), &mut fx);
        Ok((session, kept, fx))
    }

    /// Registers an agent; its session.
    fn join(&mut self, name: &str, devices: Vec<Device>) -> u64 {
        match self.hello(name, devices, vec![]) {
            Ok((session, _, _)) => session,
            Err(e) => panic!("hello of {name}: {e}"),
        }
    }

    fn submit(&mut self, id: &str, yaml: &str) -> Result<Effects, ApiError> {
        self.submit_with(id, yaml, false)
    }

    /// `wait`: store a sweep no connected device matches, to wait for one.
    fn submit_with(&mut self, id: &str, yaml: &str, wait: bool) -> Result<Effects, ApiError> {
        let parsed = chimera_domain::spec::parse(yaml)
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let mut fx = Effects::default();
        self.core.submit(
            SweepId::from(id),
            &parsed,
            BTreeMap::new(),
            "op".into(),
            wait,
            &mut fx,
        )?;
        Ok(fx)
    }

    fn event(&mut self, agent: &str, session: u64, event: AgentEvent) -> Effects {
        let mut fx = Effects::default();
        self.core
            .agent_event(&AgentId::from(agent), session, event, &mut fx);
        fx
    }

    fn dispatch(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.core.dispatch(&mut fx);
        fx
    }

    fn tick(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.core.tick(&mut fx);
        fx
    }
}

fn check(fx: &Effects, snapshot: Expect) {
    snapshot.assert_eq(&fx.to_string());
}

fn ok<T>(r: Result<T, ApiError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("refused: {e}"),
    }
}

#[test]
fn a_submitted_sweep_is_stored_then_assigned_to_free_devices() {
    let mut s = Sim::new();
    s.at(0);
    let a = s.join("a", vec![cpu("c1")]);
    let fx = ok(s.submit("S", &matmul(2, 1, "each-class")));
    check(
        &fx,
        expect![[r#"
            write trial S/t00000 pending attempt=0 queue=c1
            write trial S/t00001 pending attempt=0 queue=c1
            write sweep S running trials_total=2
            event S running pending=2 running=0 succeeded=0 failed=0 cancelled=0
        "#]],
    );
    check(
        &s.dispatch(),
        expect![[r#"
        write trial S/t00000 assigned attempt=1 queue=c1 agent=a device=cpu
        send a#1 assign S/t00000#1 device=cpu input=0 bytes
        event S trial t00000 assigned
        observe assignment_latency=0ms
    "#]],
    );
    // The device is busy: the second trial waits for it.
    s.at(1);
    check(
        &s.event("a", a, AgentEvent::Started(trial("S", "t00000", 1))),
        expect![[r#"
        write trial S/t00000 running attempt=1 queue=c1 agent=a device=cpu
        event S trial t00000 running
        keepalive lease=101
    "#]],
    );
    s.at(2);
    check(
        &s.event("a", a, finished(trial("S", "t00000", 1), 7.0)),
        expect![[r#"
        write trial S/t00000 succeeded attempt=1 queue=c1 agent=a device=cpu
        send a#1 ack S/t00000#1 accepted
        event S trial t00000 succeeded
        keepalive lease=101
    "#]],
    );
    check(
        &s.dispatch(),
        expect![[r#"
        write trial S/t00001 assigned attempt=1 queue=c1 agent=a device=cpu
        send a#1 assign S/t00001#1 device=cpu input=0 bytes
        event S trial t00001 assigned
        observe assignment_latency=2000ms
    "#]],
    );
}

#[test]
fn an_agent_silent_past_its_lease_loses_its_trials_to_another() {
    let mut s = Sim::new();
    s.at(0);
    s.join("a", vec![cpu("c1")]);
    ok(s.submit("S", &matmul(1, 1, "each-class")));
    s.dispatch();
    s.at(5);
    s.join("b", vec![cpu("c1")]);
    // Not yet: the lease has time left.
    check(&s.at(9).tick(), expect![[r#""#]]);
    check(
        &s.at(11).tick(),
        expect![[r#"
        write trial S/t00000 pending attempt=1 queue=c1
        close a#1
        event S trial t00000 pending
        revoke lease=101
    "#]],
    );
    check(
        &s.dispatch(),
        expect![[r#"
        write trial S/t00000 assigned attempt=2 queue=c1 agent=b device=cpu
        send b#2 assign S/t00000#2 device=cpu input=0 bytes
        event S trial t00000 assigned
        observe assignment_latency=0ms
    "#]],
    );
}

#[test]
fn a_reconnecting_agent_keeps_the_trial_it_still_runs_and_loses_the_rest() {
    let mut s = Sim::new();
    s.at(0);
    s.join(
        "a",
        vec![
            device("cpu0", "c1", &["kernel/matmul"]),
            device("cpu1", "c1", &["kernel/matmul"]),
        ],
    );
    ok(s.submit("S", &matmul(2, 1, "each-class")));
    s.dispatch();
    s.at(3);
    // It comes back running only the first; the second is requeued, and an
    // attempt it names that is not current is told to stop.
    let (session, kept, fx) = ok(s.hello(
        "a",
        vec![
            device("cpu0", "c1", &["kernel/matmul"]),
            device("cpu1", "c1", &["kernel/matmul"]),
        ],
        vec![trial("S", "t00000", 1), trial("S", "t00009", 1)],
    ));
    assert_eq!(kept, vec![trial("S", "t00000", 1)]);
    assert_eq!(session, 2);
    check(
        &fx,
        expect![[r#"
        write agent a lease=102
        write trial S/t00001 pending attempt=1 queue=c1
        send a#2 welcome lease_ttl=10000ms heartbeat=2500ms
        send a#2 cancel S/t00009#1
        event S trial t00001 pending
        revoke lease=101
    "#]],
    );
    check(
        &s.dispatch(),
        expect![[r#"
        write trial S/t00001 assigned attempt=2 queue=c1 agent=a device=cpu1
        send a#2 assign S/t00001#2 device=cpu1 input=0 bytes
        event S trial t00001 assigned
        observe assignment_latency=0ms
    "#]],
    );
}

#[test]
fn reports_of_stale_attempts_and_other_agents_are_refused_and_counted() {
    let mut s = Sim::new();
    s.at(0);
    let a = s.join("a", vec![cpu("c1")]);
    let b = s.join("b", vec![cpu("c2")]);
    ok(s.submit("S", &matmul(1, 1, "any")));
    check(
        &s.dispatch(),
        expect![[r#"
        write trial S/t00000 assigned attempt=1 queue=* agent=a device=cpu
        send a#1 assign S/t00000#1 device=cpu input=0 bytes
        event S trial t00000 assigned
        observe assignment_latency=0ms
    "#]],
    );
    // b reports a trial assigned to a; a reports an older attempt.
    check(
        &s.event("b", b, finished(trial("S", "t00000", 1), 1.0)),
        expect![[r#"
        send b#2 ack S/t00000#1 refused: trial t00000 of sweep S is not assigned to agent b: refused
        keepalive lease=102
        observe refused=OtherAgent
    "#]],
    );
    check(
        &s.event("a", a, finished(trial("S", "t00000", 0), 1.0)),
        expect![[r#"
        send a#1 ack S/t00000#0 refused: stale result: trial t00000 is at attempt 1 on agent a, this was attempt 0
        keepalive lease=101
        observe refused=StaleAttempt
    "#]],
    );
    // The current attempt is recorded; a second report of it is refused.
    check(
        &s.event("a", a, finished(trial("S", "t00000", 1), 2.0)),
        expect![[r#"
        write trial S/t00000 succeeded attempt=1 queue=* agent=a device=cpu
        write sweep S done trials_total=1
        send a#1 ack S/t00000#1 accepted
        event S trial t00000 succeeded
        keepalive lease=101
    "#]],
    );
    check(
        &s.event("a", a, finished(trial("S", "t00000", 1), 2.0)),
        expect![[r#"
        send a#1 ack S/t00000#1 refused: trial t00000 of sweep S is not running (finished, cancelled or unknown)
        keepalive lease=101
        observe refused=NotRunning
    "#]],
    );
}

#[test]
fn placement_all_pins_a_trial_to_every_matching_device() {
    let mut s = Sim::new();
    s.at(0);
    s.join("a", vec![cpu("c1")]);
    s.join("b", vec![cpu("c1")]);
    check(
        &ok(s.submit("S", &matmul(1, 1, "all"))),
        expect![[r#"
        write trial S/t00000 pending attempt=0 queue=c1 pinned=a/cpu
        write trial S/t00001 pending attempt=0 queue=c1 pinned=b/cpu
        write sweep S running trials_total=2
        event S running pending=2 running=0 succeeded=0 failed=0 cancelled=0
    "#]],
    );
    check(
        &s.dispatch(),
        expect![[r#"
        write trial S/t00000 assigned attempt=1 queue=c1 agent=a device=cpu pinned=a/cpu
        write trial S/t00001 assigned attempt=1 queue=c1 agent=b device=cpu pinned=b/cpu
        send a#1 assign S/t00000#1 device=cpu input=0 bytes
        send b#2 assign S/t00001#1 device=cpu input=0 bytes
        event S trial t00000 assigned
        event S trial t00001 assigned
        observe assignment_latency=0ms
        observe assignment_latency=0ms
    "#]],
    );
}

#[test]
fn placement_each_class_runs_every_configuration_on_every_class() {
    let mut s = Sim::new();
    s.at(0);
    s.join("a", vec![cpu("c1")]);
    s.join("b", vec![cpu("c2")]);
    check(
        &ok(s.submit("S", &matmul(1, 2, "each-class"))),
        expect![[r#"
            write trial S/t00000 pending attempt=0 queue=c1
            write trial S/t00001 pending attempt=0 queue=c2
            write trial S/t00002 pending attempt=0 queue=c2
            write trial S/t00003 pending attempt=0 queue=c1
            write sweep S running trials_total=4
            event S running pending=4 running=0 succeeded=0 failed=0 cancelled=0
        "#]],
    );
    check(
        &s.dispatch(),
        expect![[r#"
            write trial S/t00000 assigned attempt=1 queue=c1 agent=a device=cpu
            write trial S/t00001 assigned attempt=1 queue=c2 agent=b device=cpu
            send a#1 assign S/t00000#1 device=cpu input=0 bytes
            send b#2 assign S/t00001#1 device=cpu input=0 bytes
            event S trial t00000 assigned
            event S trial t00001 assigned
            observe assignment_latency=0ms
            observe assignment_latency=0ms
        "#]],
    );
}

#[test]
fn a_sweep_no_device_can_run_is_refused_naming_the_field_and_changes_nothing() {
    let mut s = Sim::new();
    s.at(0);
    s.join("a", vec![device("cpu", "c1", &["kernel/softmax"])]);
    let err = s
        .submit("S", &matmul(1, 1, "each-class"))
        .err()
        .map(|e| e.to_string());
    expect!["line 4: op: op `matmul` of workload kernel is not supported by the agents of device class(es) `c1`"].assert_eq(&err.unwrap_or_default());
    let none = s
        .submit("S", "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\"]\ntarget: {kind: gpu}\n")
        .err()
        .map(|e| e.to_string());
    expect![[r#"line 6: target: no connected agent has a device matching {"kind":["gpu"]}; connected device classes: [c1]"#]].assert_eq(&none.unwrap_or_default());
    assert!(s.core.list_sweeps(None, 10).is_empty());
}

#[test]
fn a_serve_sweep_naming_an_engine_no_agent_has_is_refused_with_the_flag_to_give() {
    let mut s = Sim::new();
    s.at(0);
    s.join(
        "a",
        vec![device("cpu", "c1", &["serve/candle", "serve/openai"])],
    );
    let spec = "name: s\nworkload: serve\nparams:\n  model: m.gguf\n  engine: [candle, llama-server]\nslo: {ttft_ms: 500}\n";
    let err = s.submit("S", spec).err().map(|e| e.to_string());
    expect!["line 5: engine: engine `llama-server` is not available on the agents of device class(es) `c1`; start an agent with --engine llama-server=PATH"].assert_eq(&err.unwrap_or_default());
    assert!(s.core.list_sweeps(None, 10).is_empty());
    // The engine it has: accepted.
    let spec = "name: s\nworkload: serve\nparams:\n  model: m.gguf\n  concurrency: [1, 2]\nslo: {ttft_ms: 500}\n";
    let effects = ok(s.submit("S", spec));
    check(
        &effects,
        expect![[r#"
            write trial S/t00000 pending attempt=0 queue=c1
            write trial S/t00001 pending attempt=0 queue=c1
            write sweep S running trials_total=2
            event S running pending=2 running=0 succeeded=0 failed=0 cancelled=0
        "#]],
    );
}

#[test]
fn successive_halving_proposes_the_next_rung_when_a_generation_ends() {
    let mut s = Sim::new();
    s.at(0);
    let a = s.join("a", vec![cpu("c1")]);
    let spec = "name: h\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\", \"2,8,8\", \"3,8,8\"]\nsearch: {strategy: halving, eta: 3, budget: {param: min_iters, min: 2, max: 6}, objective: {maximize: gflop_per_s}}\n";
    check(
        &ok(s.submit("S", spec)),
        expect![[r#"
        write trial S/t00000 pending attempt=0 queue=c1 rung=0
        write trial S/t00001 pending attempt=0 queue=c1 rung=0
        write trial S/t00002 pending attempt=0 queue=c1 rung=0
        write sweep S running trials_total=3
        event S running pending=3 running=0 succeeded=0 failed=0 cancelled=0
    "#]],
    );
    for (i, g) in [(0, 1.0), (1, 3.0), (2, 2.0)] {
        s.dispatch();
        let fx = s.event("a", a, finished(trial("S", &format!("t0000{i}"), 1), g));
        if i == 2 {
            // The last of rung 0: rung 1 runs the best configuration.
            check(
                &fx,
                expect![[r#"
                write trial S/t00002 succeeded attempt=1 queue=c1 agent=a device=cpu rung=0
                write sweep S running trials_total=4
                write trial S/t00003 pending attempt=0 queue=c1 rung=1
                send a#1 ack S/t00002#1 accepted
                event S trial t00002 succeeded
                keepalive lease=101
            "#]],
            );
        }
    }
}

#[test]
fn budget_max_duration_cancels_what_has_not_started() {
    let mut s = Sim::new();
    s.at(0);
    let a = s.join("a", vec![cpu("c1")]);
    let spec = format!(
        "{}budget: {{max_duration: 30s}}\n",
        matmul(3, 1, "each-class")
    );
    ok(s.submit("S", &spec));
    s.dispatch();
    // The agent stays alive, running the first trial.
    for t in [8, 16, 24] {
        s.at(t)
            .event("a", a, AgentEvent::Heartbeat(vec![trial("S", "t00000", 1)]));
    }
    check(&s.at(29).tick(), expect![[r#""#]]);
    // Past the budget: what has not started is cancelled; the running trial
    // finishes, so the sweep is not done yet.
    check(
        &s.at(31).tick(),
        expect![[r#"
        write trial S/t00001 cancelled attempt=0 queue=c1 error="budget.max_duration (30 s) ran out before the trial started"
        write trial S/t00002 cancelled attempt=0 queue=c1 error="budget.max_duration (30 s) ran out before the trial started"
        event S trial t00001 cancelled
        event S trial t00002 cancelled
    "#]],
    );
}

#[test]
fn cancelling_a_sweep_tells_agents_to_stop_and_ends_every_open_trial() {
    let mut s = Sim::new();
    s.at(0);
    s.join("a", vec![cpu("c1")]);
    ok(s.submit("S", &matmul(2, 1, "each-class")));
    s.dispatch();
    let mut fx = Effects::default();
    let sweep = ok(s.core.cancel(&SweepId::from("S"), "op".into(), &mut fx));
    assert_eq!((sweep.state, sweep.cancelled), (SweepState::Cancelled, 2));
    check(
        &fx,
        expect![[r#"
        write sweep S cancelled trials_total=2
        write trial S/t00000 cancelled attempt=1 queue=c1 agent=a device=cpu
        write trial S/t00001 cancelled attempt=0 queue=c1
        send a#1 cancel S/t00000#1
        event S trial t00000 cancelled
        event S trial t00001 cancelled
        event S cancelled pending=0 running=0 succeeded=0 failed=0 cancelled=2
    "#]],
    );
}

/// A stored trial of sweep S.
fn stored(
    id: &str,
    state: TrialState,
    agent: Option<&str>,
    depends_on: Option<&str>,
) -> TrialRecord {
    TrialRecord {
        state,
        attempt: u32::from(state != TrialState::Pending),
        agent: agent.map(str::to_owned),
        device_id: agent.map(|_| "cpu".to_owned()),
        depends_on: depends_on.map(str::to_owned),
        ..TrialRecord::pending(
            id.to_owned(),
            "S".to_owned(),
            "c1".to_owned(),
            chimera_domain::params::Params::new(),
            0,
            0,
        )
    }
}

fn stored_sweep(yaml: &str) -> SweepRecord {
    let parsed =
        ok(chimera_domain::spec::parse(yaml).map_err(|e| ApiError::InvalidArgument(e.to_string())));
    SweepRecord {
        id: "S".into(),
        name: parsed.spec.name.clone(),
        workload: parsed.spec.workload.name().into(),
        spec_yaml: yaml.into(),
        created_unix_ms: 0,
        state: SweepState::Running,
        trials_total: 4,
        harness: parsed.spec.harness,
        placement: parsed.spec.placement,
        target: parsed.spec.target.clone(),
        search: parsed.spec.search.clone(),
        budget: parsed.spec.budget,
        class_configs: BTreeMap::new(),
        trace: BTreeMap::new(),
        submitted_by: None,
        cancelled_by: None,
        order_seed: 0,
        waiting_for: None,
    }
}

#[test]
fn recovery_requeues_pending_holds_running_and_settles_dependents() {
    let t0 = Now::system();
    let trials = vec![
        stored("t00000", TrialState::Pending, None, None),
        stored("t00001", TrialState::Running, Some("a"), None),
        // Depends on a reference that failed: fails with why.
        stored("t00002", TrialState::Failed, None, None),
        stored("t00003", TrialState::Pending, None, Some("t00002")),
        // Stored as running on no agent: back to pending.
        stored("t00004", TrialState::Assigned, None, None),
    ];
    let (mut core, r) = Core::recover(
        config(),
        t0,
        vec![stored_sweep(&matmul(1, 1, "each-class"))],
        trials,
    );
    assert_eq!((r.held, r.needed.len()), (1, 0));
    let mut fx = Effects::default();
    core.resume(r, Default::default(), &mut fx);
    check(
        &fx,
        expect![[r#"
        write trial S/t00004 pending attempt=1 queue=c1
        write trial S/t00003 failed attempt=0 queue=c1 depends_on=t00002 error="the trial it depends on (t00002) ended failed"
        event S trial t00004 pending
        event S trial t00003 failed
    "#]],
    );
    // The absent agent's trial waits one lease, then is requeued.
    let mut fx = Effects::default();
    core.set_now(t0.after(TTL + Duration::from_secs(1)));
    core.tick(&mut fx);
    check(
        &fx,
        expect![[r#"
        write trial S/t00001 pending attempt=1 queue=c1
        event S trial t00001 pending
    "#]],
    );
}

#[test]
fn recovery_fails_a_dependent_whose_reference_output_is_missing() {
    let trials = vec![
        stored("t00000", TrialState::Succeeded, Some("a"), None),
        stored("t00001", TrialState::Pending, None, Some("t00000")),
    ];
    let (mut core, r) = Core::recover(
        config(),
        Now::system(),
        vec![stored_sweep(&matmul(1, 1, "each-class"))],
        trials,
    );
    assert_eq!(r.needed, vec![TrialKey::new("S", "t00000")]);
    let mut fx = Effects::default();
    core.resume(r, Default::default(), &mut fx);
    check(
        &fx,
        expect![[r#"
        write trial S/t00001 failed attempt=0 queue=c1 depends_on=t00000 error="the output of reference trial t00000 is missing from the store"
        write sweep S done trials_total=4
        event S trial t00001 failed
    "#]],
    );
}

/// Each trial as `id config/repeat` in id order (the run order).
fn run_order(s: &Sim) -> String {
    let mut t: Vec<&TrialRecord> = s.core.live.values().collect();
    t.sort_by(|a, b| a.id.cmp(&b.id));
    t.iter()
        .map(|t| format!("{} c{}/r{}\n", t.id, t.config_index, t.repeat))
        .collect()
}

#[test]
fn trials_run_in_seeded_interleaved_rounds() {
    let mut s = Sim::new();
    s.at(0);
    s.join("a", vec![cpu("c1")]);
    let spec = format!("{}order_seed: 7\n", matmul(3, 2, "each-class"));
    ok(s.submit("S", &spec));
    // Round 0 covers every configuration before round 1 starts, each round
    // in its own shuffled order.
    expect![[r#"
        t00000 c0/r0
        t00001 c2/r0
        t00002 c1/r0
        t00003 c2/r1
        t00004 c1/r1
        t00005 c0/r1
    "#]]
    .assert_eq(&run_order(&s));
    // Dispatch follows it: the first trial out of the queue is t00000.
    let fx = s.dispatch();
    assert!(fx.to_string().contains("assign S/t00000#1"), "{fx}");
    // The same seed gives the same order on another sweep.
    let mut again = Sim::new();
    again.at(0);
    again.join("a", vec![cpu("c1")]);
    ok(again.submit("T", &spec));
    assert_eq!(
        run_order(&s).replace("S/", ""),
        run_order(&again).replace("T/", "")
    );
}

#[test]
fn a_sweep_submitted_before_its_device_joins_waits_then_starts() {
    let mut s = Sim::new();
    s.at(0);
    check(
        &ok(s.submit_with("S", &matmul(2, 1, "each-class"), true)),
        expect![[r#"
            write sweep S waiting trials_total=0
            event S waiting pending=0 running=0 succeeded=0 failed=0 cancelled=0
        "#]],
    );
    // Nothing to dispatch while it waits.
    check(&s.dispatch(), expect![[r#""#]]);
    // An agent joins: the sweep is planned on it and runs.
    s.at(1);
    s.join("a", vec![cpu("c1")]);
    expect![[r#"
        t00000 c0/r0
        t00001 c1/r0
    "#]]
    .assert_eq(&run_order(&s));
    let fx = s.dispatch();
    assert!(fx.to_string().contains("assign S/t0000"), "{fx}");
}

#[test]
fn two_sweeps_sharing_a_device_take_turns() {
    let mut s = Sim::new();
    s.at(0);
    let a = s.join("a", vec![cpu("c1")]);
    // A (three trials) first, then B (two): the device alternates between
    // them rather than run all of A before B.
    ok(s.submit("A", &matmul(3, 1, "each-class")));
    ok(s.submit("B", &matmul(2, 1, "each-class")));
    let mut order = Vec::new();
    for t in 1..=5 {
        let fx = s.dispatch();
        let text = fx.to_string();
        let assigned: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("send a#1 assign "))
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(assigned.len(), 1, "one device, one assignment: {fx}");
        let (sweep, rest) = assigned[0].split_once('/').unwrap_or_default();
        let trial_id = rest.split('#').next().unwrap_or_default();
        order.push(format!("{sweep}/{trial_id}"));
        s.at(t);
        s.event("a", a, AgentEvent::Started(trial(sweep, trial_id, 1)));
        s.event("a", a, finished(trial(sweep, trial_id, 1), 7.0));
    }
    assert_eq!(
        order,
        ["A/t00000", "B/t00000", "A/t00001", "B/t00001", "A/t00002"]
    );
}
