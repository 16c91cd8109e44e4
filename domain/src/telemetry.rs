//! Device telemetry: the sample the agents' samplers produce, and the maths
//! that turns a trial's samples into its summary (energy, power, clocks,
//! throttling). Pure functions over recorded sequences, so they are tested
//! on sequences, not on hardware.

use crate::metrics;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the device was doing when a sample was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No trial (or set-up before the harness starts).
    Idle,
    Warmup,
    /// The harness's measured window: what the summary covers.
    Measure,
    /// Just after a trial.
    Cooldown,
}

impl Phase {
    /// The phase's name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Cooldown => "cooldown",
        }
    }

    /// Parses a name; unknown names are idle.
    pub fn parse(s: &str) -> Phase {
        match s {
            "warmup" => Phase::Warmup,
            "measure" => Phase::Measure,
            "cooldown" => Phase::Cooldown,
            _ => Phase::Idle,
        }
    }
}

/// Sample field names; each carries its unit. A field a device cannot read is
/// absent from the sample, never zero.
pub mod field {
    /// Board / package power now, watts.
    pub const POWER_W: &str = "power_w";
    /// NVML total energy counter since driver load, millijoules (monotonic).
    pub const GPU_ENERGY_MJ: &str = "gpu_energy_mj";
    /// Enforced power limit, watts.
    pub const POWER_LIMIT_W: &str = "power_limit_w";
    /// Device temperature (GPU core; on a host, the hottest sensor), °C.
    pub const TEMP_C: &str = "temp_c";
    pub const SM_CLOCK_MHZ: &str = "sm_clock_mhz";
    pub const MEM_CLOCK_MHZ: &str = "mem_clock_mhz";
    pub const GPU_UTIL_PCT: &str = "gpu_util_pct";
    pub const MEM_UTIL_PCT: &str = "mem_util_pct";
    pub const MEM_USED_BYTES: &str = "mem_used_bytes";
    pub const PCIE_TX_KB_PER_S: &str = "pcie_tx_kb_per_s";
    pub const PCIE_RX_KB_PER_S: &str = "pcie_rx_kb_per_s";
    /// Host CPU busy time over the last interval, percent of all cores.
    pub const CPU_UTIL_PCT: &str = "cpu_util_pct";
    /// Mean / lowest current frequency over the cores, MHz.
    pub const CPU_MHZ_MEAN: &str = "cpu_mhz_mean";
    pub const CPU_MHZ_MIN: &str = "cpu_mhz_min";
    /// RAPL package / DRAM energy counters, microjoules (wrap at their range).
    pub const RAPL_PACKAGE_UJ: &str = "rapl_package_uj";
    pub const RAPL_DRAM_UJ: &str = "rapl_dram_uj";
    /// Resident set size of the agent process, bytes.
    pub const RSS_BYTES: &str = "rss_bytes";
}

/// One reading of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock time, Unix milliseconds.
    pub t_ms: i64,
    pub device_id: String,
    pub phase: Phase,
    /// The trial attempt running (`SWEEP/TRIAL/ATTEMPT`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
    pub fields: BTreeMap<String, f64>,
    /// Clock-throttle reasons active now (`sw_power_cap`, `hw_thermal_slowdown`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle: Vec<String>,
}

impl From<&Sample> for chimera_proto::v1::TelemetrySample {
    fn from(s: &Sample) -> Self {
        chimera_proto::v1::TelemetrySample {
            device_id: s.device_id.clone(),
            t_unix_ms: s.t_ms,
            phase: s.phase.name().to_owned(),
            trial: s.trial.clone().unwrap_or_default(),
            fields: s.fields.clone().into_iter().collect(),
            throttle: s.throttle.clone(),
        }
    }
}

impl TryFrom<chimera_proto::v1::TelemetrySample> for Sample {
    type Error = String;
    /// Checks the sample against the wire limits ([`crate::wire`]): a device
    /// id by the id rule, field and throttle names by the metric-name rule,
    /// finite values, a trial label of at most 200 bytes.
    fn try_from(s: chimera_proto::v1::TelemetrySample) -> Result<Self, String> {
        use crate::wire::{
            check_count, check_len, check_metric_name, MAX_SAMPLE_FIELDS, MAX_THROTTLE_REASONS,
        };
        crate::ids::check_device_id("sample.device_id", &s.device_id)?;
        check_count("sample.fields", s.fields.len(), MAX_SAMPLE_FIELDS)?;
        for (k, v) in &s.fields {
            check_metric_name("sample.fields", k)?;
            if !v.is_finite() {
                return Err(format!("sample.fields[{k}] = {v} is not a finite number"));
            }
        }
        check_count("sample.throttle", s.throttle.len(), MAX_THROTTLE_REASONS)?;
        for t in &s.throttle {
            check_metric_name("sample.throttle", t)?;
        }
        check_len("sample.trial", &s.trial, 200)?;
        check_len("sample.phase", &s.phase, 16)?;
        Ok(Sample {
            t_ms: s.t_unix_ms,
            device_id: s.device_id,
            phase: Phase::parse(&s.phase),
            trial: (!s.trial.is_empty()).then_some(s.trial),
            fields: s.fields.into_iter().collect(),
            throttle: s.throttle,
        })
    }
}

/// An energy counter: a field, its unit in joules, and where it wraps.
#[derive(Clone, Copy, Debug)]
pub struct Counter {
    pub field: &'static str,
    pub joules_per_unit: f64,
    /// The counter's range (it restarts from 0 past it), when known.
    pub wrap: Option<f64>,
}

/// Throttle reasons that mean the clocks were held down (not merely idle or
/// set by the application).
pub const REAL_THROTTLES: &[&str] = &[
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
];

/// Energy over a run of samples from a counter: the sum of successive
/// increases, a decrease being a wrap (when the range is known) or a reset
/// (skipped). `None` with fewer than two readings.
pub fn counter_energy_j(samples: &[&Sample], c: &Counter) -> Option<(f64, f64)> {
    let pts: Vec<(i64, f64)> = samples
        .iter()
        .filter_map(|s| s.fields.get(c.field).map(|v| (s.t_ms, *v)))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let mut units = 0.0;
    for w in pts.windows(2) {
        let d = w[1].1 - w[0].1;
        if d >= 0.0 {
            units += d;
        } else if let Some(range) = c.wrap {
            units += d + range;
        }
    }
    let secs = (pts[pts.len() - 1].0 - pts[0].0) as f64 / 1e3;
    Some((units * c.joules_per_unit, secs))
}

/// Energy by trapezoidal integration of `power_w` over time.
pub fn integrated_energy_j(samples: &[&Sample]) -> Option<(f64, f64)> {
    let pts: Vec<(i64, f64)> = samples
        .iter()
        .filter_map(|s| s.fields.get(field::POWER_W).map(|v| (s.t_ms, *v)))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let j = pts
        .windows(2)
        .map(|w| (w[0].1 + w[1].1) / 2.0 * (w[1].0 - w[0].0) as f64 / 1e3)
        .sum();
    let secs = (pts[pts.len() - 1].0 - pts[0].0) as f64 / 1e3;
    Some((j, secs))
}

/// Mean power over samples: from the first counter that has readings, else
/// integrated power; with the source's name.
pub fn mean_power_w(samples: &[&Sample], counters: &[Counter]) -> Option<(f64, String)> {
    for c in counters {
        if let Some((j, s)) = counter_energy_j(samples, c).filter(|(_, s)| *s > 0.0) {
            return Some((j / s, format!("counter:{}", c.field)));
        }
    }
    integrated_energy_j(samples)
        .filter(|(_, s)| *s > 0.0)
        .map(|(j, s)| (j / s, "power_integration".to_owned()))
}

/// A trial's telemetry summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Metrics to add to the trial's (units in the names).
    pub metrics: BTreeMap<String, f64>,
    /// How energy was obtained (`counter:gpu_energy_mj`, `power_integration`, `none`).
    pub energy_source: String,
    /// Throttle reasons seen during the measured window.
    pub throttle_reasons: Vec<String>,
}

/// Summarises the measured window of a trial.
///
/// `measure` are the samples taken in the trial's `measure` phase, `idle`
/// those taken while the device was idle just before it, `measure_s` the
/// harness's measured time, `work` the units of work done in it (tokens,
/// iterations) with their metric name (`joules_per_token`).
pub fn summarize(
    measure: &[&Sample],
    idle: &[&Sample],
    counters: &[Counter],
    measure_s: f64,
    work: Option<(f64, &str)>,
) -> Summary {
    let mut m = BTreeMap::new();
    m.insert(metrics::TELEMETRY_SAMPLES.to_owned(), measure.len() as f64);
    let values = |f: &str| -> Vec<f64> {
        measure
            .iter()
            .filter_map(|s| s.fields.get(f).copied())
            .filter(|v| v.is_finite())
            .collect()
    };
    let mean = crate::stats::mean;
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let p = values(field::POWER_W);
    if !p.is_empty() {
        m.insert(metrics::POWER_W_MAX.to_owned(), max(&p));
    }
    let t = values(field::TEMP_C);
    if !t.is_empty() {
        m.insert(metrics::TEMP_C_MAX.to_owned(), max(&t));
    }
    for (f, min_name, mean_name) in [
        (
            field::SM_CLOCK_MHZ,
            metrics::SM_CLOCK_MHZ_MIN,
            metrics::SM_CLOCK_MHZ_MEAN,
        ),
        (
            field::CPU_MHZ_MEAN,
            metrics::CPU_MHZ_MIN,
            metrics::CPU_MHZ_MEAN,
        ),
    ] {
        let v = values(f);
        if !v.is_empty() {
            m.insert(min_name.to_owned(), min(&v));
            m.insert(mean_name.to_owned(), mean(&v));
        }
    }
    for (f, name) in [
        (field::CPU_UTIL_PCT, metrics::CPU_UTIL_PCT_MEAN),
        (field::GPU_UTIL_PCT, metrics::GPU_UTIL_PCT_MEAN),
    ] {
        let v = values(f);
        if !v.is_empty() {
            m.insert(name.to_owned(), mean(&v));
        }
    }
    for (f, name) in [
        (field::MEM_USED_BYTES, metrics::DEVICE_MEM_USED_BYTES_MAX),
        (field::RSS_BYTES, metrics::RSS_BYTES_MAX),
    ] {
        let v = values(f);
        if !v.is_empty() {
            m.insert(name.to_owned(), max(&v));
        }
    }
    let mut reasons = BTreeSet::new();
    let mut throttled = 0usize;
    for s in measure {
        let real: Vec<&String> = s
            .throttle
            .iter()
            .filter(|r| REAL_THROTTLES.contains(&r.as_str()))
            .collect();
        if !real.is_empty() {
            throttled += 1;
        }
        reasons.extend(real.into_iter().cloned());
    }
    if !measure.is_empty() {
        m.insert(
            metrics::THROTTLED_FRAC.to_owned(),
            throttled as f64 / measure.len() as f64,
        );
    }
    let mut energy_source = "none".to_owned();
    if let Some((w, source)) = mean_power_w(measure, counters) {
        energy_source = source;
        m.insert(metrics::POWER_W_MEAN.to_owned(), w);
        let energy = w * measure_s;
        m.insert(metrics::ENERGY_J.to_owned(), energy);
        if let Some((units, name)) = work.filter(|(u, _)| *u > 0.0) {
            m.insert(name.to_owned(), energy / units);
        }
        if let Some((idle_w, _)) = mean_power_w(idle, counters) {
            m.insert(metrics::IDLE_POWER_W.to_owned(), idle_w);
            m.insert(
                metrics::ENERGY_J_NET.to_owned(),
                energy - idle_w * measure_s,
            );
        }
    }
    Summary {
        metrics: m,
        energy_source,
        throttle_reasons: reasons.into_iter().collect(),
    }
}

/// The file `chimera run` and `chimera demo` write next to their results
/// files: the trials' raw samples, one [`TrialSample`] per line.
pub const TELEMETRY_FILE: &str = "telemetry.jsonl";

/// One line of [`TELEMETRY_FILE`]: a sample and the trial it was taken for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialSample {
    pub sweep_id: String,
    pub trial_id: String,
    #[serde(flatten)]
    pub sample: Sample,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_ms: i64, phase: Phase, fields: &[(&str, f64)], throttle: &[&str]) -> Sample {
        Sample {
            t_ms,
            device_id: "gpu:0".into(),
            phase,
            trial: None,
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            throttle: throttle.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    const NVML: Counter = Counter {
        field: field::GPU_ENERGY_MJ,
        joules_per_unit: 1e-3,
        wrap: None,
    };
    const RAPL: Counter = Counter {
        field: field::RAPL_PACKAGE_UJ,
        joules_per_unit: 1e-6,
        wrap: Some(1000.0),
    };

    #[test]
    fn counter_deltas_handle_wrap_and_resets() {
        // RAPL wraps at 1000 uJ: 900 -> 100 is +200.
        let seq = [
            s(0, Phase::Measure, &[(field::RAPL_PACKAGE_UJ, 700.0)], &[]),
            s(100, Phase::Measure, &[(field::RAPL_PACKAGE_UJ, 900.0)], &[]),
            s(200, Phase::Measure, &[(field::RAPL_PACKAGE_UJ, 100.0)], &[]),
        ];
        let refs: Vec<&Sample> = seq.iter().collect();
        let (j, secs) = counter_energy_j(&refs, &RAPL).unwrap();
        assert!((j - 400e-6).abs() < 1e-12, "{j}");
        assert_eq!(secs, 0.2);
        // Without a known range a decrease is a reset: that interval is skipped.
        let seq = [
            s(0, Phase::Measure, &[(field::GPU_ENERGY_MJ, 5000.0)], &[]),
            s(100, Phase::Measure, &[(field::GPU_ENERGY_MJ, 6000.0)], &[]),
            s(200, Phase::Measure, &[(field::GPU_ENERGY_MJ, 10.0)], &[]),
            s(300, Phase::Measure, &[(field::GPU_ENERGY_MJ, 1010.0)], &[]),
        ];
        let refs: Vec<&Sample> = seq.iter().collect();
        let (j, _) = counter_energy_j(&refs, &NVML).unwrap();
        assert!((j - 2.0).abs() < 1e-9, "{j}");
    }

    #[test]
    fn power_integration_is_trapezoidal_and_needs_two_points() {
        let seq = [
            s(0, Phase::Measure, &[(field::POWER_W, 100.0)], &[]),
            s(1000, Phase::Measure, &[(field::POWER_W, 300.0)], &[]),
        ];
        let refs: Vec<&Sample> = seq.iter().collect();
        assert_eq!(integrated_energy_j(&refs), Some((200.0, 1.0)));
        assert_eq!(integrated_energy_j(&refs[..1]), None);
    }

    #[test]
    fn summary_prefers_the_counter_and_nets_out_idle() {
        let idle = [
            s(
                -200,
                Phase::Idle,
                &[(field::GPU_ENERGY_MJ, 0.0), (field::POWER_W, 50.0)],
                &[],
            ),
            s(
                -100,
                Phase::Idle,
                &[(field::GPU_ENERGY_MJ, 5000.0), (field::POWER_W, 50.0)],
                &[],
            ),
        ];
        let measure = [
            s(
                0,
                Phase::Measure,
                &[
                    (field::GPU_ENERGY_MJ, 10_000.0),
                    (field::POWER_W, 180.0),
                    (field::TEMP_C, 60.0),
                ],
                &[],
            ),
            s(
                100,
                Phase::Measure,
                &[
                    (field::GPU_ENERGY_MJ, 30_000.0),
                    (field::POWER_W, 220.0),
                    (field::TEMP_C, 65.0),
                ],
                &["sw_power_cap", "gpu_idle"],
            ),
        ];
        let (mi, me): (Vec<&Sample>, Vec<&Sample>) =
            (idle.iter().collect(), measure.iter().collect());
        let sum = summarize(&me, &mi, &[NVML], 2.0, Some((1000.0, "joules_per_token")));
        let m = &sum.metrics;
        assert_eq!(sum.energy_source, "counter:gpu_energy_mj");
        assert!((m["power_w_mean"] - 200.0).abs() < 1e-9, "{m:?}");
        assert!((m["energy_j"] - 400.0).abs() < 1e-9);
        assert!((m["joules_per_token"] - 0.4).abs() < 1e-12);
        assert!((m["idle_power_w"] - 50.0).abs() < 1e-9);
        assert!((m["energy_j_net"] - 300.0).abs() < 1e-9);
        assert_eq!((m["power_w_max"], m["temp_c_max"]), (220.0, 65.0));
        assert_eq!(m["throttled_frac"], 0.5);
        assert_eq!(sum.throttle_reasons, vec!["sw_power_cap"]);
    }

    #[test]
    fn missing_fields_are_absent_not_zero() {
        let measure = [
            s(0, Phase::Measure, &[(field::CPU_UTIL_PCT, 90.0)], &[]),
            s(100, Phase::Measure, &[(field::CPU_UTIL_PCT, 100.0)], &[]),
        ];
        let me: Vec<&Sample> = measure.iter().collect();
        let sum = summarize(&me, &[], &[NVML, RAPL], 0.2, Some((10.0, "joules_per_op")));
        assert_eq!(sum.energy_source, "none");
        assert_eq!(sum.metrics["cpu_util_pct_mean"], 95.0);
        for absent in [
            "energy_j",
            "power_w_mean",
            "temp_c_max",
            "joules_per_op",
            "idle_power_w",
        ] {
            assert!(!sum.metrics.contains_key(absent), "{absent}");
        }
        assert_eq!(sum.metrics["telemetry_samples"], 2.0);
    }

    /// Every name the summary can emit, with every sensor present, is in the
    /// metrics table.
    #[test]
    fn every_summary_metric_is_in_the_table() {
        let all = [
            (field::GPU_ENERGY_MJ, 0.0),
            (field::POWER_W, 100.0),
            (field::TEMP_C, 60.0),
            (field::SM_CLOCK_MHZ, 1500.0),
            (field::CPU_MHZ_MEAN, 3000.0),
            (field::CPU_UTIL_PCT, 50.0),
            (field::GPU_UTIL_PCT, 80.0),
            (field::MEM_USED_BYTES, 1e9),
            (field::RSS_BYTES, 1e8),
        ];
        let at = |t: i64, phase: Phase, energy: f64| {
            let mut f = all;
            f[0].1 = energy;
            s(t, phase, &f, &["sw_thermal_slowdown"])
        };
        let idle = [at(-200, Phase::Idle, 0.0), at(-100, Phase::Idle, 1000.0)];
        let measure = [
            at(0, Phase::Measure, 2000.0),
            at(100, Phase::Measure, 4000.0),
        ];
        let (mi, me): (Vec<&Sample>, Vec<&Sample>) =
            (idle.iter().collect(), measure.iter().collect());
        for work in [
            metrics::JOULES_PER_TOKEN,
            metrics::JOULES_PER_OP,
            metrics::JOULES_PER_WEIGHT,
        ] {
            let sum = summarize(&me, &mi, &[NVML], 0.1, Some((10.0, work)));
            assert!(sum.metrics.contains_key(work), "{:?}", sum.metrics);
            assert!(sum.metrics.contains_key(metrics::SM_CLOCK_MHZ_MEAN));
            let unlisted = metrics::unlisted(sum.metrics.keys().map(String::as_str));
            assert!(unlisted.is_empty(), "not in METRICS: {unlisted:?}");
        }
    }
}
