//! Listings of the controller's state: sweeps (with a sweep's failed
//! trials), agents and their devices, and a trial's raw telemetry samples.

use super::{emit, sweep_state, Column, Format};
use crate::table::Col;
use chimera_domain::params::{label, params_from_proto};
use chimera_proto::v1 as proto;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A sweep as `chimera sweep list` prints it (fields in alphabetical
/// order, as its JSON has always had them).
#[derive(Serialize)]
struct SweepRow<'a> {
    /// Who cancelled it, if anybody did.
    cancelled_by: Option<&'a str>,
    created_unix_ms: i64,
    id: &'a str,
    name: &'a str,
    state: &'static str,
    submitted_by: &'a str,
    trials: TrialCounts,
    workload: &'a str,
    /// While waiting for devices: why it cannot start yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for: Option<&'a str>,
    /// `sweep status` only: every failed trial with its error in full.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_trials: Option<Vec<FailedRow<'a>>>,
}

/// A failed trial as `chimera sweep status` lists it.
#[derive(Serialize)]
struct FailedRow<'a> {
    id: &'a str,
    device_class: &'a str,
    /// The configuration, `name=value ...`.
    config: String,
    attempt: u32,
    agent: &'a str,
    /// The error, whole.
    error: &'a str,
}

impl<'a> From<&'a proto::Trial> for FailedRow<'a> {
    fn from(t: &'a proto::Trial) -> Self {
        FailedRow {
            id: &t.id,
            device_class: &t.device_class,
            config: params_from_proto(&t.params)
                .map(|p| label(&p))
                .unwrap_or_default(),
            attempt: t.attempt,
            agent: &t.agent,
            error: &t.error,
        }
    }
}

/// How many of a sweep's trials are in each state.
#[derive(Serialize)]
struct TrialCounts {
    cancelled: u32,
    failed: u32,
    pending: u32,
    running: u32,
    succeeded: u32,
    total: u32,
}

impl<'a> From<&'a proto::Sweep> for SweepRow<'a> {
    fn from(s: &'a proto::Sweep) -> Self {
        SweepRow {
            cancelled_by: (!s.cancelled_by.is_empty()).then_some(s.cancelled_by.as_str()),
            created_unix_ms: s.created_unix_ms,
            id: &s.id,
            name: &s.name,
            state: sweep_state(s.state),
            submitted_by: &s.submitted_by,
            trials: TrialCounts {
                cancelled: s.trials_cancelled,
                failed: s.trials_failed,
                pending: s.trials_pending,
                running: s.trials_running,
                succeeded: s.trials_succeeded,
                total: s.trials_total,
            },
            workload: &s.workload,
            waiting_for: (!s.waiting_for.is_empty()).then_some(s.waiting_for.as_str()),
            failed_trials: None,
        }
    }
}

/// Sweeps.
pub fn sweeps(list: &[proto::Sweep], fmt: Format) -> anyhow::Result<()> {
    let rows: Vec<SweepRow> = list.iter().map(SweepRow::from).collect();
    emit(fmt, &sweep_columns(), &rows, &rows)
}

/// One sweep, as `chimera sweep status` shows it: its row (failed and
/// cancelled counts always shown), then its failed trials — in JSON under
/// `failed_trials` with their errors whole, in a table below the sweep's.
/// CSV is the sweep's row only.
pub fn sweep_status(s: &proto::Sweep, failed: &[proto::Trial], fmt: Format) -> anyhow::Result<()> {
    let mut row = SweepRow::from(s);
    row.failed_trials = Some(failed.iter().map(FailedRow::from).collect());
    let rows = [row];
    emit(fmt, &sweep_columns(), &rows, &rows)?;
    if let (Format::Table, Some(why)) = (fmt, rows[0].waiting_for) {
        super::print_line(format!("waiting for devices: {why}"))?;
    }
    let failed_rows = rows[0].failed_trials.as_deref().unwrap_or_default();
    if fmt == Format::Table && !failed_rows.is_empty() {
        emit(fmt, &failed_columns(), failed_rows, failed_rows)?;
    }
    Ok(())
}

/// The columns of a sweep listing. Failed and cancelled counts are never
/// left out (a sweep "done" whose trials failed must say so).
fn sweep_columns<'a>() -> Vec<Column<'a, SweepRow<'a>>> {
    let count = |name: &'static str, keep: u8, n: fn(&TrialCounts) -> u32| {
        Column::new(name, Col::num(keep), move |s: &SweepRow| {
            n(&s.trials).to_string()
        })
    };
    vec![
        Column::new("id", Col::key(), |s: &SweepRow| s.id.to_owned()),
        Column::new("name", Col::text(8, 10), |s: &SweepRow| s.name.to_owned()),
        Column::new("workload", Col::text(7, 8), |s: &SweepRow| {
            s.workload.to_owned()
        }),
        Column::new("state", Col::text(9, 9), |s: &SweepRow| s.state.to_owned()),
        count("total", 6, |t| t.total),
        count("pending", 3, |t| t.pending),
        count("running", 4, |t| t.running),
        count("succeeded", 6, |t| t.succeeded),
        count("failed", Col::KEEP, |t| t.failed),
        count("cancelled", Col::KEEP, |t| t.cancelled),
        Column::new("created_unix_s", Col::num(1), |s: &SweepRow| {
            (s.created_unix_ms / 1000).to_string()
        }),
    ]
}

/// The columns of a sweep's failed trials; the error gives way last.
fn failed_columns<'a>() -> Vec<Column<'a, FailedRow<'a>>> {
    type F<'r> = FailedRow<'r>;
    vec![
        Column::new("failed trial", Col::key(), |t: &F| t.id.to_owned()),
        Column::new("device_class", Col::text(4, 12), |t: &F| {
            t.device_class.to_owned()
        }),
        Column::new("config", Col::text(5, 16), |t: &F| t.config.clone()),
        Column::new("attempt", Col::num(2), |t: &F| t.attempt.to_string()),
        Column::new("agent", Col::text(3, 8), |t: &F| t.agent.to_owned()),
        Column::new("error", Col::text(9, 40), |t: &F| t.error.to_owned()),
    ]
}

/// An agent as `chimera agents list` prints it (fields in alphabetical
/// order, as its JSON has always had them).
#[derive(Serialize)]
struct AgentRow<'a> {
    connected: bool,
    devices: Vec<DeviceRow<'a>>,
    /// Who drained it, if anybody did.
    drained_by: Option<&'a str>,
    draining: bool,
    features: &'a [String],
    hostname: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    last_seen_ms_ago: u64,
    name: &'a str,
    registered_by: &'a str,
    running: Vec<RunningRow<'a>>,
    version: &'a str,
}

/// One of an agent's devices.
#[derive(Serialize)]
struct DeviceRow<'a> {
    capabilities: &'a [String],
    compute_capability: &'a str,
    cores: u32,
    device_class: &'a str,
    driver_version: &'a str,
    id: &'a str,
    kind: &'a str,
    memory_bytes: u64,
    model: &'a str,
    /// Why no trial can run on it (a GPU of an agent built without CUDA);
    /// absent when it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    unusable_reason: Option<String>,
    vendor: &'a str,
}

/// Why a device cannot run trials: the agent's reason, or a generic one
/// when it has no capabilities and gave none; `None` when it is usable.
fn unusable_reason(d: &proto::Device) -> Option<String> {
    chimera_domain::device::Device::from(d.clone()).why_unusable()
}

/// A trial an agent runs now.
#[derive(Serialize)]
struct RunningRow<'a> {
    attempt: u32,
    sweep_id: &'a str,
    trial_id: &'a str,
}

impl<'a> From<&'a proto::Agent> for AgentRow<'a> {
    fn from(a: &'a proto::Agent) -> Self {
        AgentRow {
            connected: a.connected,
            devices: a
                .devices
                .iter()
                .map(|d| DeviceRow {
                    capabilities: &d.capabilities,
                    compute_capability: &d.compute_capability,
                    cores: d.cores,
                    device_class: &d.device_class,
                    driver_version: &d.driver_version,
                    id: &d.id,
                    kind: &d.kind,
                    memory_bytes: d.memory_bytes,
                    model: &d.model,
                    unusable_reason: unusable_reason(d),
                    vendor: &d.vendor,
                })
                .collect(),
            drained_by: (!a.drained_by.is_empty()).then_some(a.drained_by.as_str()),
            draining: a.draining,
            features: &a.features,
            hostname: &a.hostname,
            labels: a
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            last_seen_ms_ago: a.last_seen_ms_ago,
            name: &a.name,
            registered_by: &a.registered_by,
            running: a
                .running
                .iter()
                .map(|r| RunningRow {
                    attempt: r.attempt,
                    sweep_id: &r.sweep_id,
                    trial_id: &r.trial_id,
                })
                .collect(),
            version: &a.version,
        }
    }
}

/// Agents: a table row per device, a JSON object per agent.
pub fn agents(list: &[proto::Agent], fmt: Format) -> anyhow::Result<()> {
    let agents: Vec<AgentRow> = list.iter().map(AgentRow::from).collect();
    let lines: Vec<Line> = agents
        .iter()
        .flat_map(|a| a.devices.iter().map(move |d| (a, d)))
        .collect();
    let columns = agent_columns();
    emit(fmt, &columns, &lines, &agents)
}

/// A row of the agent table: an agent and one of its devices.
type Line<'r, 'a> = (&'r AgentRow<'a>, &'r DeviceRow<'a>);

/// The columns of the agent table.
fn agent_columns<'r, 'a>() -> Vec<Column<'static, Line<'r, 'a>>> {
    vec![
        Column::new("name", Col::text(Col::KEEP, 12), |(a, _): &Line| {
            a.name.to_owned()
        }),
        Column::new("hostname", Col::text(4, 10), |(a, _): &Line| {
            a.hostname.to_owned()
        }),
        Column::new("version", Col::text(1, 8), |(a, _): &Line| {
            a.version.to_owned()
        }),
        Column::new("connected", Col::text(6, 5), |(a, _): &Line| {
            a.connected.to_string()
        }),
        Column::new("draining", Col::text(3, 5), |(a, _): &Line| {
            a.draining.to_string()
        }),
        Column::new("device", Col::text(7, 6), |(_, d): &Line| d.id.to_owned()),
        Column::new("device_class", Col::text(8, 14), |(_, d): &Line| {
            d.device_class.to_owned()
        }),
        Column::number("memory_GiB", 2, |(_, d): &Line| {
            Some(d.memory_bytes as f64 / (1u64 << 30) as f64)
        }),
        Column::new(
            "usable",
            Col::text(Col::KEEP, 24),
            |(_, d): &Line| match &d.unusable_reason {
                None => "yes".to_owned(),
                Some(why) => format!("no: {why}"),
            },
        ),
        Column::new("running", Col::text(5, 12), |(a, _): &Line| {
            a.running
                .iter()
                .map(|r| format!("{}/{}#{}", r.sweep_id, r.trial_id, r.attempt))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        Column::new("last_seen_ms", Col::num(1), |(a, _): &Line| {
            a.last_seen_ms_ago.to_string()
        }),
    ]
}

/// Power, utilisation, clocks and temperature go before the other sensors
/// when a telemetry table is too wide.
const FIRST_SENSORS: &[&str] = &[
    "power_w",
    "cpu_util_pct",
    "gpu_util_pct",
    "sm_clock_mhz",
    "cpu_mhz_mean",
    "temp_c",
];

/// Telemetry samples: one row each, one column per sensor seen. JSON is
/// the samples as the domain reads them (refused when one is malformed).
pub fn telemetry(samples: &[proto::TelemetrySample], fmt: Format) -> anyhow::Result<()> {
    let parsed = match fmt {
        Format::Json => samples
            .iter()
            .cloned()
            .map(chimera_domain::telemetry::Sample::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("a telemetry sample from the controller: {e}"))?,
        _ => Vec::new(),
    };
    emit(fmt, &telemetry_columns(samples), samples, &parsed)?;
    if fmt == Format::Table {
        eprintln!("{} samples", samples.len());
    }
    Ok(())
}

/// The columns of a telemetry listing: one per sensor any sample has.
fn telemetry_columns(
    samples: &[proto::TelemetrySample],
) -> Vec<Column<'_, proto::TelemetrySample>> {
    let fields: BTreeSet<&String> = samples.iter().flat_map(|s| s.fields.keys()).collect();
    type S = proto::TelemetrySample;
    let mut columns = vec![
        Column::new("t_unix_ms", Col::num(9), |s: &S| s.t_unix_ms.to_string()),
        Column::new("device", Col::text(7, 6), |s: &S| s.device_id.clone()),
        Column::new("phase", Col::text(8, 7), |s: &S| s.phase.clone()),
        Column::new("trial", Col::text(3, 12), |s: &S| s.trial.clone()),
    ];
    for f in fields {
        let keep = match FIRST_SENSORS.iter().position(|p| p == f) {
            Some(k) => 8 - (k as u8).min(3),
            None => 2,
        };
        columns.push(Column::number(f.as_str(), keep, move |s: &S| {
            s.fields.get(f).copied()
        }));
    }
    columns.push(Column::new("throttle", Col::text(1, 10), |s: &S| {
        s.throttle.join(" ")
    }));
    columns
}

#[cfg(test)]
mod tests {
    use super::super::{render, write_csv};
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    /// A listing as a table at `width`, or as markdown with `None`.
    fn table<R>(columns: &[Column<'_, R>], rows: &[R], width: Option<usize>) -> String {
        let (text, dropped) = render(columns, rows, width.is_none(), width);
        format!("{text}dropped: {dropped:?}\n")
    }

    fn csv<R>(columns: &[Column<'_, R>], rows: &[R]) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        write_csv(&mut w, columns, rows).unwrap();
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    fn failed_trial() -> proto::Trial {
        proto::Trial {
            id: "t00003".into(),
            sweep_id: "01S".into(),
            state: proto::TrialState::Failed as i32,
            device_class: "cpu: test x2".into(),
            params: [(
                "format".to_owned(),
                proto::ParamValue {
                    kind: Some(proto::param_value::Kind::Text("q4_0".into())),
                },
            )]
            .into_iter()
            .collect(),
            attempt: 2,
            agent: "a1".into(),
            error: "model file /models/x.gguf: no such file | and a second clause that makes this error long".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_sweep_table_keeps_every_number_at_200_columns_and_its_failures_at_80() {
        let mut s = sweep("");
        s.id = "01KAS1Y9N7W1G4E6M9C7V3T2QX".into();
        let rows = [SweepRow::from(&s)];
        expect![[r#"
            ┌────────────────────────────┬───────────────┬──────────┬───────────┬───────┬─────────┬─────────┬───────────┬────────┬───────────┬────────────────┐
            │ id                         ┆ name          ┆ workload ┆ state     ┆ total ┆ pending ┆ running ┆ succeeded ┆ failed ┆ cancelled ┆ created_unix_s │
            ╞════════════════════════════╪═══════════════╪══════════╪═══════════╪═══════╪═════════╪═════════╪═══════════╪════════╪═══════════╪════════════════╡
            │ 01KAS1Y9N7W1G4E6M9C7V3T2QX ┆ quick "start" ┆ kernel   ┆ cancelled ┆ 6     ┆ 1       ┆ 2       ┆ 3         ┆ 4      ┆ 5         ┆ 1700000000     │
            └────────────────────────────┴───────────────┴──────────┴───────────┴───────┴─────────┴─────────┴───────────┴────────┴───────────┴────────────────┘
            dropped: []
        "#]]
        .assert_eq(&table(&sweep_columns(), &rows, Some(200)));
        expect![[r#"
            ┌────────────────────────────┬───────────────┬───────────┬────────┬───────────┐
            │ id                         ┆ name          ┆ state     ┆ failed ┆ cancelled │
            ╞════════════════════════════╪═══════════════╪═══════════╪════════╪═══════════╡
            │ 01KAS1Y9N7W1G4E6M9C7V3T2QX ┆ quick "start" ┆ cancelled ┆ 4      ┆ 5         │
            └────────────────────────────┴───────────────┴───────────┴────────┴───────────┘
            dropped: ["workload", "total", "pending", "running", "succeeded", "created_unix_s"]
        "#]]
        .assert_eq(&table(&sweep_columns(), &rows, Some(80)));
    }

    #[test]
    fn sweep_status_lists_the_failed_trials_whole_in_json_and_in_a_table() {
        let s = sweep("");
        let t = failed_trial();
        let mut row = SweepRow::from(&s);
        row.failed_trials = Some(vec![FailedRow::from(&t)]);
        expect![[r#"
            {
              "cancelled_by": null,
              "created_unix_ms": 1700000000123,
              "id": "01S",
              "name": "quick \"start\"",
              "state": "cancelled",
              "submitted_by": "cert:operator/ada",
              "trials": {
                "cancelled": 5,
                "failed": 4,
                "pending": 1,
                "running": 2,
                "succeeded": 3,
                "total": 6
              },
              "workload": "kernel",
              "failed_trials": [
                {
                  "id": "t00003",
                  "device_class": "cpu: test x2",
                  "config": "format=q4_0",
                  "attempt": 2,
                  "agent": "a1",
                  "error": "model file /models/x.gguf: no such file | and a second clause that makes this error long"
                }
              ]
            }"#]].assert_eq(&serde_json::to_string_pretty(&row).unwrap());
        let failed = [FailedRow::from(&t)];
        expect![[r#"
            ┌────────┬─────────────┬───────────────────────────────────────────────────────┐
            │ failed ┆ config      ┆ error                                                 │
            │ trial  ┆             ┆                                                       │
            ╞════════╪═════════════╪═══════════════════════════════════════════════════════╡
            │ t00003 ┆ format=q4_0 ┆ model file /models/x.gguf: no such file | and a seco… │
            └────────┴─────────────┴───────────────────────────────────────────────────────┘
            dropped: ["device_class", "attempt", "agent"]
        "#]]
        .assert_eq(&table(&failed_columns(), &failed, Some(80)));
    }

    #[test]
    fn the_agent_table_has_a_row_per_device_and_csv_raw_numbers() {
        let mut a = agent("cert:operator/bob");
        // gpu:1 as an agent built without CUDA reports it.
        a.devices[1].capabilities.clear();
        a.devices[1].unusable_reason = "this agent was built without CUDA".into();
        let agents = [a];
        let rows: Vec<AgentRow> = agents.iter().map(AgentRow::from).collect();
        type Line<'r, 'a> = (&'r AgentRow<'a>, &'r DeviceRow<'a>);
        let lines: Vec<Line> = rows
            .iter()
            .flat_map(|a| a.devices.iter().map(move |d| (a, d)))
            .collect();
        let json = serde_json::to_value(&rows[0].devices).unwrap();
        assert_eq!(
            json[1]["unusable_reason"],
            "this agent was built without CUDA"
        );
        assert!(json[0].get("unusable_reason").is_none(), "{json}");
        expect![[r#"
            ┌──────┬──────────┬─────────┬────────┬────────┬────────┬───────────┬─────────┬──────────────────────────┬──────────────┐
            │ name ┆ hostname ┆ version ┆ conne… ┆ drain… ┆ device ┆ device_   ┆ memory_ ┆ usable                   ┆ running      │
            │      ┆          ┆         ┆        ┆        ┆        ┆ class     ┆ GiB     ┆                          ┆              │
            ╞══════╪══════════╪═════════╪════════╪════════╪════════╪═══════════╪═════════╪══════════════════════════╪══════════════╡
            │ a1   ┆ host-1   ┆ 0.1.0   ┆ true   ┆ true   ┆ gpu:0  ┆ gpu: H100 ┆ 80.00   ┆ yes                      ┆ 01S/t00001#2 │
            │ a1   ┆ host-1   ┆ 0.1.0   ┆ true   ┆ true   ┆ gpu:1  ┆ gpu: H100 ┆ 80.00   ┆ no: this agent was buil… ┆ 01S/t00001#2 │
            └──────┴──────────┴─────────┴────────┴────────┴────────┴───────────┴─────────┴──────────────────────────┴──────────────┘
            dropped: ["last_seen_ms"]
        "#]].assert_eq(&table(&agent_columns(), &lines, Some(120)));
        expect![[r#"

            | name | hostname | version | connected | draining | device | device_class | memory_GiB | usable | running | last_seen_ms |
            | --- | --- | --- | --- | --- | --- | --- | ---: | --- | --- | ---: |
            | a1 | host-1 | 0.1.0 | true | true | gpu:0 | gpu: H100 | 80.00 | yes | 01S/t00001#2 | 1500 |
            | a1 | host-1 | 0.1.0 | true | true | gpu:1 | gpu: H100 | 80.00 | no: this agent was built without CUDA | 01S/t00001#2 | 1500 |

            dropped: []
        "#]].assert_eq(&table(&agent_columns(), &lines, None));
        expect![[r#"
            name,hostname,version,connected,draining,device,device_class,memory_GiB,usable,running,last_seen_ms
            a1,host-1,0.1.0,true,true,gpu:0,gpu: H100,80,yes,01S/t00001#2,1500
            a1,host-1,0.1.0,true,true,gpu:1,gpu: H100,80,no: this agent was built without CUDA,01S/t00001#2,1500
        "#]].assert_eq(&csv(&agent_columns(), &lines));
    }

    #[test]
    fn the_telemetry_table_rounds_and_its_csv_keeps_raw_values() {
        let sample = |t: i64, power: f64| proto::TelemetrySample {
            t_unix_ms: t,
            device_id: "cpu:0".into(),
            phase: "measure".into(),
            trial: "01S/t00000".into(),
            fields: [("power_w".to_owned(), power), ("temp_c".to_owned(), 61.0)]
                .into_iter()
                .collect(),
            throttle: vec![],
        };
        let samples = [
            sample(1_700_000_000_000, 123.456789),
            sample(1_700_000_000_100, 0.000123),
        ];
        let columns = telemetry_columns(&samples);
        expect![[r#"
            ┌───────────────┬────────┬─────────┬────────────┬───────────┬────────┬──────────┐
            │ t_unix_ms     ┆ device ┆ phase   ┆ trial      ┆ power_w   ┆ temp_c ┆ throttle │
            ╞═══════════════╪════════╪═════════╪════════════╪═══════════╪════════╪══════════╡
            │ 1700000000000 ┆ cpu:0  ┆ measure ┆ 01S/t00000 ┆ 123.5     ┆ 61.00  ┆          │
            │ 1700000000100 ┆ cpu:0  ┆ measure ┆ 01S/t00000 ┆ 0.0001230 ┆ 61.00  ┆          │
            └───────────────┴────────┴─────────┴────────────┴───────────┴────────┴──────────┘
            dropped: []
        "#]]
        .assert_eq(&table(&columns, &samples, Some(100)));
        let text = csv(&columns, &samples);
        expect![[r#"
            t_unix_ms,device,phase,trial,power_w,temp_c,throttle
            1700000000000,cpu:0,measure,01S/t00000,123.456789,61,
            1700000000100,cpu:0,measure,01S/t00000,0.000123,61,
        "#]]
        .assert_eq(&text);
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        for r in rd.records() {
            let r = r.unwrap();
            for i in [0, 4, 5] {
                r[i].parse::<f64>().unwrap();
            }
        }
    }

    fn sweep(cancelled_by: &str) -> proto::Sweep {
        proto::Sweep {
            id: "01S".into(),
            name: "quick \"start\"".into(),
            workload: "kernel".into(),
            state: proto::SweepState::Cancelled as i32,
            created_unix_ms: 1_700_000_000_123,
            trials_total: 6,
            trials_pending: 1,
            trials_running: 2,
            trials_succeeded: 3,
            trials_failed: 4,
            trials_cancelled: 5,
            submitted_by: "cert:operator/ada".into(),
            cancelled_by: cancelled_by.into(),
            ..Default::default()
        }
    }

    fn agent(drained_by: &str) -> proto::Agent {
        let device = |id: &str| proto::Device {
            id: id.into(),
            kind: "gpu".into(),
            vendor: "NVIDIA".into(),
            model: "H100".into(),
            memory_bytes: 80 << 30,
            cores: 132,
            compute_capability: "9.0".into(),
            driver_version: "550".into(),
            device_class: "gpu: H100".into(),
            capabilities: vec!["generate".into(), "kernel/matmul".into()],
            unusable_reason: String::new(),
        };
        proto::Agent {
            name: "a1".into(),
            hostname: "host-1".into(),
            version: "0.1.0".into(),
            devices: vec![device("gpu:0"), device("gpu:1")],
            features: vec!["cpu".into(), "cuda".into()],
            running: vec![proto::TrialRef {
                sweep_id: "01S".into(),
                trial_id: "t00001".into(),
                attempt: 2,
            }],
            last_seen_ms_ago: 1500,
            connected: true,
            draining: !drained_by.is_empty(),
            labels: [("site", "lab"), ("rack", "3"), ("zone", "b")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .collect(),
            registered_by: "cert:agent/a1".into(),
            drained_by: drained_by.into(),
        }
    }

    /// The JSON the listings printed before their rows were types, built
    /// the way it was then: the rows must print the same bytes.
    #[test]
    fn sweep_and_agent_rows_print_the_json_they_always_have() {
        for by in ["", "cert:operator/bob"] {
            let s = sweep(by);
            let old = json!({
                "id": s.id, "name": s.name, "workload": s.workload, "state": sweep_state(s.state),
                "created_unix_ms": s.created_unix_ms,
                "submitted_by": s.submitted_by, "cancelled_by": (!s.cancelled_by.is_empty()).then_some(&s.cancelled_by),
                "trials": {"total": s.trials_total, "pending": s.trials_pending, "running": s.trials_running,
                           "succeeded": s.trials_succeeded, "failed": s.trials_failed, "cancelled": s.trials_cancelled},
            });
            assert_eq!(
                serde_json::to_string_pretty(&[SweepRow::from(&s)]).unwrap(),
                serde_json::to_string_pretty(&[old]).unwrap()
            );
            let a = agent(by);
            let old = json!({
                "name": a.name, "hostname": a.hostname, "version": a.version, "features": a.features,
                "connected": a.connected, "draining": a.draining, "last_seen_ms_ago": a.last_seen_ms_ago,
                "labels": a.labels, "registered_by": a.registered_by,
                "drained_by": (!a.drained_by.is_empty()).then_some(&a.drained_by),
                "running": a.running.iter().map(|r| json!({"sweep_id": r.sweep_id, "trial_id": r.trial_id, "attempt": r.attempt})).collect::<Vec<_>>(),
                "devices": a.devices.iter().map(|d| json!({
                    "id": d.id, "kind": d.kind, "vendor": d.vendor, "model": d.model, "device_class": d.device_class,
                    "memory_bytes": d.memory_bytes, "cores": d.cores, "compute_capability": d.compute_capability,
                    "driver_version": d.driver_version, "capabilities": d.capabilities,
                })).collect::<Vec<_>>(),
            });
            assert_eq!(
                serde_json::to_string_pretty(&[AgentRow::from(&a)]).unwrap(),
                serde_json::to_string_pretty(&[old]).unwrap()
            );
        }
    }
}
