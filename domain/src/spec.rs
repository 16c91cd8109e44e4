//! The sweep spec: YAML in, validated and expanded configurations out.
//!
//! Everything that can be checked without knowing the fleet is checked here, at
//! parse time, with an error that names the field path and the line. The
//! controller adds the fleet-dependent checks (is there a matching device, does
//! it support the op) on top.

use crate::catalog::{DType, KernelOp, QuantFormat, Shape, Variant, Workload};
use crate::device::{DeviceView, Selector};
use crate::models::{EvalTrial, GenerateTrial, QuantizeTrial, ROLE};
use crate::params::{ParamValue, Params};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The spec format version this build reads.
pub const SPEC_VERSION: u32 = 1;
/// Most configurations one sweep may expand into (before repeats and classes).
pub const MAX_CONFIGS: usize = 100_000;
/// Most trials one sweep may hold, by default (configurations x repeats x
/// device classes, and an eval sweep's references); the controller's
/// `--max-trials-per-sweep` sets it.
pub const MAX_TRIALS: u64 = 100_000;
/// Deepest nesting of YAML collections (block or flow) a spec may use; real
/// specs use about 5. Deeper documents are refused before they are parsed.
pub const MAX_NESTING: usize = 32;

/// Limits a spec is parsed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most trials the sweep may expand into (see [`MAX_TRIALS`]).
    pub max_trials: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_trials: MAX_TRIALS,
        }
    }
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    /// Dotted path of the offending field (`params.format[1]`); empty for the document.
    pub path: String,
    /// 1-based line in the YAML text, where known.
    pub line: Option<usize>,
    /// What is wrong, naming the value.
    pub message: String,
}

impl SpecError {
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(line) = self.line {
            out.push_str(&format!("line {line}: "));
        }
        if !self.path.is_empty() && self.path != "." {
            out.push_str(&format!("{}: ", self.path));
        }
        out.push_str(&self.message);
        out
    }

    /// A semantic error located by searching the source for the field.
    pub fn at(source: &str, path: &str, field: &str, value: Option<&str>, message: String) -> Self {
        SpecError {
            path: path.to_owned(),
            line: find_line(source, field, value),
            message,
        }
    }
}

/// The first line that sets `field` (and mentions `value`, when given), 1-based.
pub fn find_line(source: &str, field: &str, value: Option<&str>) -> Option<usize> {
    let key = format!("{field}:");
    let hit = |line: &str| {
        let t = line
            .trim_start()
            .trim_start_matches("- ")
            .trim_start_matches('{');
        (t.starts_with(&key)
            || line.contains(&format!(" {key}"))
            || line.contains(&format!("{{{key}")))
            && value.is_none_or(|v| line.contains(v))
    };
    source
        .lines()
        .position(hit)
        .or_else(|| source.lines().position(|l| l.contains(&key)))
        .map(|i| i + 1)
}

/// A parsed, validated sweep spec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepSpec {
    /// Spec format version (1).
    pub version: u32,
    /// Human name of the sweep.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The workload every trial runs.
    pub workload: Workload,
    /// Parameters shared by every variant.
    pub params: Space,
    /// Alternatives, each merged over `params`; the sweep is their union.
    pub variants: Vec<Space>,
    /// How configurations are chosen from the space.
    pub search: Search,
    /// Where each configuration runs.
    pub placement: Placement,
    /// Which devices may run the trials.
    pub target: Target,
    /// Limits on the sweep's trials and time.
    pub budget: Budget,
    /// Times each configuration is run on each class.
    pub repeats: u32,
    /// Measurement settings.
    pub harness: Harness,
}

/// A parameter space of one workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Space {
    /// The `kernel` workload's parameters.
    Kernel(KernelSpace),
    /// A model workload's parameters (`quantize`, `generate`, `eval`): each
    /// name takes one value or a list, crossed as a grid; every configuration
    /// is checked by the workload's typed trial (`crate::models`).
    Model(ModelSpace),
}

/// Parameters of a model workload, by name, and (in a variant) the devices
/// the variant is for (`when`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSpace(
    pub BTreeMap<String, OneOrMany<ParamValue>>,
    pub Option<Target>,
);

impl Serialize for ModelSpace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        if let Some(w) = &self.1 {
            m.serialize_entry("when", w)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ModelSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelSpace;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of parameter names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelSpace, A::Error> {
                let mut out = ModelSpace::default();
                while let Some(k) = map.next_key::<String>()? {
                    if k == "when" {
                        let w: Target = map.next_value()?;
                        set_once(&mut out.1, w, "when")?;
                    } else {
                        let v: OneOrMany<ParamValue> = map.next_value()?;
                        if out.0.insert(k.clone(), v).is_some() {
                            return Err(de::Error::custom(format!("duplicate field `{k}`")));
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Space {
    /// The empty space of a workload.
    pub fn empty(workload: Workload) -> Space {
        match workload {
            Workload::Kernel => Space::Kernel(KernelSpace::default()),
            _ => Space::Model(ModelSpace::default()),
        }
    }
}

/// Parameters of the `kernel` workload; each takes one value or a list (crossed as a grid).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpace {
    /// `matmul` or `qmatmul`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<OneOrMany<KernelOp>>,
    /// Dense data type for `matmul` (default f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<OneOrMany<DType>>,
    /// Weight quantization format for `qmatmul`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OneOrMany<QuantFormat>>,
    /// `m,n,k` sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<OneOrMany<Shape>>,
    /// CPU threads (default: every logical core of the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<OneOrMany<Threads>>,
    /// `fused` (candle's kernel) or `naive` (composed from elementary ops),
    /// for softmax, rmsnorm, rope and attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<OneOrMany<Variant>>,
    /// In a variant: the devices it is for (conditional parameters, such as
    /// `threads` for CPUs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Target>,
}

/// A thread count, 1..=1024.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Threads(pub u32);

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == 0 || v > 1024 {
            return Err(de::Error::custom(format!(
                "threads = {v} must be between 1 and 1024"
            )));
        }
        Ok(Threads(v))
    }
}

/// A numeric range a parameter takes instead of a list:
/// `{min: 1, max: 16}` (every integer), `{min: 64, max: 512, step: 64}`,
/// `{min: 1, max: 32, log: true}` (1, 2, 4, ..., 32: doubling, or `count`
/// points spaced evenly on a log scale). Whole-number bounds and steps give
/// integers; any fractional one gives reals.
#[derive(Default)]
struct NumRange {
    min: Option<f64>,
    max: Option<f64>,
    step: Option<f64>,
    log: bool,
    count: Option<u32>,
}

enum Num {
    Int(i64),
    Real(f64),
}

/// The most values a range may expand into.
const MAX_RANGE_VALUES: usize = 4096;

impl NumRange {
    const FIELDS: &'static [&'static str] = &["min", "max", "step", "log", "count"];

    fn values(&self) -> Result<Vec<Num>, String> {
        let (Some(min), Some(max)) = (self.min, self.max) else {
            return Err("a range needs `min` and `max` (and takes `step`, or `log: true` with an optional `count`)".into());
        };
        if !(min.is_finite() && max.is_finite()) || min > max {
            return Err(format!("range: min = {min} must be at most max = {max}"));
        }
        let whole = |x: f64| x.fract() == 0.0 && x.abs() < 9.0e15;
        let ints = whole(min) && whole(max) && self.step.is_none_or(whole);
        let mut out: Vec<f64> = Vec::new();
        if self.log {
            if self.step.is_some() {
                return Err("range: `step` and `log: true` exclude each other; use `count`".into());
            }
            if min <= 0.0 {
                return Err(format!("range: a log range needs min > 0, not {min}"));
            }
            let count = match self.count {
                Some(0) | Some(1) if min < max => {
                    return Err("range: count must be at least 2".into())
                }
                Some(c) => c as usize,
                None if ints => (max / min).log2().floor() as usize + 1,
                None => return Err("range: a log range of reals needs `count`".into()),
            };
            if count > MAX_RANGE_VALUES {
                return Err(format!("range: {count} values; at most {MAX_RANGE_VALUES}"));
            }
            if self.count.is_none() {
                out.extend((0..count).map(|i| min * 2f64.powi(i as i32)));
            } else {
                let ratio = (max / min).ln() / (count.max(2) - 1) as f64;
                out.extend((0..count).map(|i| min * (ratio * i as f64).exp()));
                if let Some(last) = out.last_mut() {
                    *last = max;
                }
            }
        } else {
            if self.count.is_some() {
                return Err(
                    "range: `count` goes with `log: true`; a linear range takes `step`".into(),
                );
            }
            let step = match self.step {
                Some(s) if s > 0.0 && s.is_finite() => s,
                Some(s) => return Err(format!("range: step = {s} must be above 0")),
                None if ints => 1.0,
                None => return Err("range: a range of reals needs `step`".into()),
            };
            // `as` saturates a huge quotient; the add must not overflow.
            let n = (((max - min) / step + 1e-9).floor() as usize).saturating_add(1);
            if n > MAX_RANGE_VALUES {
                return Err(format!("range: {n} values; at most {MAX_RANGE_VALUES}"));
            }
            out.extend((0..n).map(|i| min + step * i as f64));
        }
        let mut nums: Vec<Num> = Vec::new();
        for v in out {
            let n = if ints {
                Num::Int(v.round() as i64)
            } else {
                Num::Real(v)
            };
            let dup = match (&n, nums.last()) {
                (Num::Int(a), Some(Num::Int(b))) => a == b,
                _ => false,
            };
            if !dup {
                nums.push(n);
            }
        }
        Ok(nums)
    }
}

/// One value, a non-empty list of values, or a numeric range (`{min, max, ...}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        macro_rules! scalar {
            ($fn:ident, $ty:ty, $de:ident) => {
                fn $fn<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                    T::deserialize(de::value::$de::<E>::new(v)).map(|t| OneOrMany(vec![t]))
                }
            };
        }
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a non-empty list of values")
            }
            scalar!(visit_str, &str, StrDeserializer);
            scalar!(visit_u64, u64, U64Deserializer);
            scalar!(visit_i64, i64, I64Deserializer);
            scalar!(visit_f64, f64, F64Deserializer);
            scalar!(visit_bool, bool, BoolDeserializer);
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                self.visit_str(&v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty list: give at least one value"));
                }
                Ok(OneOrMany(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut r = NumRange::default();
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "min" => r.min = Some(map.next_value()?),
                        "max" => r.max = Some(map.next_value()?),
                        "step" => r.step = Some(map.next_value()?),
                        "log" => r.log = map.next_value()?,
                        "count" => r.count = Some(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, NumRange::FIELDS)),
                    }
                }
                r.values()
                    .map_err(de::Error::custom)?
                    .into_iter()
                    .map(|v| match v {
                        Num::Int(i) => {
                            T::deserialize(de::value::I64Deserializer::<A::Error>::new(i))
                        }
                        Num::Real(f) => {
                            T::deserialize(de::value::F64Deserializer::<A::Error>::new(f))
                        }
                    })
                    .collect::<Result<Vec<T>, A::Error>>()
                    .map(OneOrMany)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

pub use crate::search::{Budget, Search};

/// Where each configuration runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Once on one device of every matching device class (the comparison).
    #[default]
    EachClass,
    /// Once on any one matching device.
    Any,
    /// Once on every matching device (device-to-device spread within a class).
    All,
}

impl Placement {
    /// The placement's name in specs.
    pub fn name(self) -> &'static str {
        match self {
            Placement::EachClass => "each-class",
            Placement::Any => "any",
            Placement::All => "all",
        }
    }
}

/// A kind of device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    /// The kind's name, as devices report it.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }
}

/// Which devices may run the sweep's trials. Every field narrows; empty matches all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    /// Device kinds (`cpu`, `gpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<OneOrMany<DeviceKind>>,
    /// Exact device class names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<OneOrMany<String>>,
    /// Agent names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<OneOrMany<String>>,
    /// Conditions on device and agent properties, all of which must hold
    /// (`gpu.name ~ "H100"`, `labels.site == lab`, `memory_gb >= 24`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub select: Option<OneOrMany<Selector>>,
}

impl Target {
    /// Whether this device is a target.
    pub fn matches(&self, d: &DeviceView) -> bool {
        self.kind
            .as_ref()
            .is_none_or(|k| k.0.iter().any(|k| k.name() == d.kind))
            && self
                .classes
                .as_ref()
                .is_none_or(|c| c.0.iter().any(|c| c == d.class))
            && self
                .agents
                .as_ref()
                .is_none_or(|a| a.0.iter().any(|a| a == d.agent))
            && self
                .select
                .as_ref()
                .is_none_or(|s| s.0.iter().all(|s| s.matches(d)))
    }
}

/// The measurement harness's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Harness {
    /// Iterations run and discarded before measuring.
    pub warmup_iters: u32,
    /// Measure at least this many iterations ...
    pub min_iters: u32,
    /// ... and for at least this long, milliseconds.
    pub min_time_ms: u32,
    /// Stop measuring after this long regardless, milliseconds.
    pub max_time_ms: u32,
}

impl Default for Harness {
    fn default() -> Self {
        Harness {
            warmup_iters: 3,
            min_iters: 10,
            min_time_ms: 300,
            max_time_ms: 10_000,
        }
    }
}

const FIELDS: &[&str] = &[
    "version",
    "name",
    "description",
    "workload",
    "params",
    "variants",
    "search",
    "placement",
    "target",
    "repeats",
    "harness",
    "budget",
];

impl<'de> Deserialize<'de> for SweepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

struct SpecVisitor;

fn set_once<T, E: de::Error>(slot: &mut Option<T>, v: T, key: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(v);
    Ok(())
}

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = SweepSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sweep spec (a mapping with `name`, `workload`, `params`, ...)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SweepSpec, A::Error> {
        let mut version = None;
        let mut name = None;
        let mut description = None;
        let mut workload: Option<Workload> = None;
        let mut params = None;
        let mut variants = None;
        let mut search = None;
        let mut placement = None;
        let mut target = None;
        let mut repeats = None;
        let mut harness = None;
        let mut budget = None;
        let need_workload = |w: Option<Workload>, key: &str| {
            w.ok_or_else(|| de::Error::custom(format!("`workload` must be given before `{key}`")))
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => {
                    let v: u32 = map.next_value()?;
                    if v != SPEC_VERSION {
                        return Err(de::Error::custom(format!(
                            "version {v} is not supported; this build reads version {SPEC_VERSION}"
                        )));
                    }
                    set_once(&mut version, v, "version")?
                }
                "name" => {
                    let v: String = map.next_value()?;
                    if v.trim().is_empty() || v.len() > 200 {
                        return Err(de::Error::custom(format!(
                            "name `{v}` must be 1 to 200 characters"
                        )));
                    }
                    set_once(&mut name, v, "name")?
                }
                "description" => set_once(&mut description, map.next_value()?, "description")?,
                "workload" => set_once(&mut workload, map.next_value()?, "workload")?,
                "params" => {
                    let space = match need_workload(workload, "params")? {
                        Workload::Kernel => Space::Kernel(map.next_value()?),
                        _ => Space::Model(map.next_value()?),
                    };
                    set_once(&mut params, space, "params")?
                }
                "variants" => {
                    let list: Vec<Space> = match need_workload(workload, "variants")? {
                        Workload::Kernel => {
                            let v: OneOrMany<KernelSpace> = map.next_value()?;
                            v.0.into_iter().map(Space::Kernel).collect()
                        }
                        _ => {
                            let v: OneOrMany<ModelSpace> = map.next_value()?;
                            v.0.into_iter().map(Space::Model).collect()
                        }
                    };
                    set_once(&mut variants, list, "variants")?
                }
                "search" => set_once(&mut search, map.next_value()?, "search")?,
                "placement" => set_once(&mut placement, map.next_value()?, "placement")?,
                "target" => set_once(&mut target, map.next_value()?, "target")?,
                "repeats" => {
                    let v: u32 = map.next_value()?;
                    if v == 0 || v > 1000 {
                        return Err(de::Error::custom(format!(
                            "repeats = {v} must be between 1 and 1000"
                        )));
                    }
                    set_once(&mut repeats, v, "repeats")?
                }
                "harness" => {
                    let h: Harness = map.next_value()?;
                    if h.min_iters == 0 {
                        return Err(de::Error::custom("harness.min_iters must be at least 1"));
                    }
                    if h.max_time_ms < h.min_time_ms {
                        return Err(de::Error::custom(format!(
                            "harness.max_time_ms = {} is less than min_time_ms = {}",
                            h.max_time_ms, h.min_time_ms
                        )));
                    }
                    set_once(&mut harness, h, "harness")?
                }
                "budget" => set_once(&mut budget, map.next_value()?, "budget")?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        let workload = workload.ok_or_else(|| de::Error::missing_field("workload"))?;
        Ok(SweepSpec {
            version: version.unwrap_or(SPEC_VERSION),
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            description,
            workload,
            params: params.unwrap_or(Space::empty(workload)),
            variants: variants.unwrap_or_default(),
            search: search.unwrap_or_default(),
            placement: placement.unwrap_or_default(),
            target: target.unwrap_or_default(),
            repeats: repeats.unwrap_or(1),
            harness: harness.unwrap_or_default(),
            budget: budget.unwrap_or_default(),
        })
    }
}

/// A spec parsed and expanded: what the controller stores and schedules.
#[derive(Clone, Debug)]
pub struct ParsedSweep {
    /// The spec.
    pub spec: SweepSpec,
    /// Every configuration, in a stable order.
    pub configs: Vec<Params>,
    /// Per configuration: the devices its variant is for (`when`), if it says.
    pub conditions: Vec<Option<Target>>,
}

/// Parses YAML text into a spec and expands it under the default
/// [`Limits`]; every error names field and line.
pub fn parse(source: &str) -> Result<ParsedSweep, SpecError> {
    parse_with(source, &Limits::default())
}

/// Parses YAML text into a spec and expands it; every error names field and
/// line. The document's nesting is checked before it is parsed, and the
/// number of configurations and trials is counted (checked arithmetic)
/// before any is built, so a small spec cannot make a huge expansion.
pub fn parse_with(source: &str, limits: &Limits) -> Result<ParsedSweep, SpecError> {
    check_nesting(source)?;
    let de = serde_yaml_ng::Deserializer::from_str(source);
    let spec: SweepSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let mut message = inner.to_string();
        // serde_yaml_ng appends " at line L column C"; the line is reported separately.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // serde_yaml_ng may prefix its own path (`params: ...`); ours is more precise.
        if let Some((head, rest)) = message.split_once(": ") {
            let pathlike = head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c));
            if pathlike && path.starts_with(head) {
                message = rest.to_owned();
            }
        }
        // Values buffered by serde (untagged forms) lose their position and
        // report line 1: locate the field in the text instead.
        let line = match line {
            Some(1) if !path.is_empty() && path != "." => {
                let field = path.rsplit('.').next().unwrap_or(&path);
                let field = field.split('[').next().unwrap_or(field);
                find_line(source, field, None).or(line)
            }
            other => other,
        };
        SpecError {
            path,
            line,
            message,
        }
    })?;
    let when_in_params = match &spec.params {
        Space::Kernel(k) => k.when.is_some(),
        Space::Model(m) => m.1.is_some(),
    };
    if when_in_params {
        return Err(SpecError::at(
            source,
            "params.when",
            "when",
            None,
            "`when` belongs in a variant: it says which devices that variant's parameters are for"
                .to_owned(),
        ));
    }
    let conditional = spec.variants.iter().any(|v| match v {
        Space::Kernel(k) => k.when.is_some(),
        Space::Model(m) => m.1.is_some(),
    });
    if conditional && spec.placement == Placement::Any {
        return Err(SpecError::at(
            source,
            "placement",
            "placement",
            Some("any"),
            "a variant with `when` needs placement `each-class` or `all` (it runs where its devices are)"
                .to_owned(),
        ));
    }
    // Grid and random sweeps create every configuration's trials at once,
    // on at least one class: refuse what cannot fit before building anything.
    if !spec.search.is_adaptive() {
        let mut n = count_spaces(&spaces(&spec))?;
        if let Search::Random { samples, .. } = spec.search {
            n = n.min(u64::from(samples));
        }
        if let Some(max) = spec.budget.max_trials {
            n = n.min(u64::from(max / spec.repeats.max(1)));
        }
        let trials = n.checked_mul(u64::from(spec.repeats));
        if trials.is_none_or(|t| t > limits.max_trials) {
            return Err(SpecError::at(
                source,
                "repeats",
                "repeats",
                None,
                format!(
                    "{n} configurations x {} repeats is more than the limit of {} trials per sweep",
                    spec.repeats, limits.max_trials
                ),
            ));
        }
    }
    let mut configs = expand(&spec, source)?;
    if let Search::Random { samples, seed } = spec.search {
        configs = sample(configs, samples as usize, seed);
    }
    if let Some(max) = spec.budget.max_trials {
        if max < spec.repeats {
            return Err(SpecError::at(
                source,
                "budget.max_trials",
                "max_trials",
                None,
                format!(
                    "budget.max_trials = {max} is less than repeats = {}: not one configuration fits",
                    spec.repeats
                ),
            ));
        }
        if !spec.search.is_adaptive() {
            // The first configurations, in grid order, that fit per class.
            configs.truncate((max / spec.repeats) as usize);
        }
    }
    if spec.placement == Placement::All && spec.search.is_adaptive() {
        return Err(SpecError::at(
            source,
            "placement",
            "placement",
            Some("all"),
            format!(
                "placement `all` cannot go with search `{}`, which searches per device class: use `each-class`",
                spec.search.name()
            ),
        ));
    }
    if let Some(goal) = spec.search.goal() {
        for (field, m) in std::iter::once(("objective", goal.objective.metric.as_str())).chain(
            goal.constraints
                .iter()
                .map(|c| ("constraints", c.metric.as_str())),
        ) {
            if !crate::metrics::reported(spec.workload, m) {
                return Err(SpecError::at(
                    source,
                    &format!("search.{field}"),
                    field,
                    Some(m),
                    format!(
                        "workload {} reports no metric `{m}`; it reports: {}",
                        spec.workload.name(),
                        crate::metrics::reported_list(spec.workload).join(", ")
                    ),
                ));
            }
        }
    }
    let (configs, conditions) = configs.into_iter().unzip();
    Ok(ParsedSweep {
        spec,
        configs,
        conditions,
    })
}

/// `n` configurations drawn without replacement from `all`, the same ones for
/// the same seed on every machine (ChaCha8), kept in grid order.
fn sample<T>(all: Vec<T>, n: usize, seed: u64) -> Vec<T> {
    use rand::SeedableRng;
    if n >= all.len() {
        return all;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, all.len(), n).into_vec();
    picked.sort_unstable();
    let mut all: Vec<Option<T>> = all.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| all[i].take()).collect()
}

/// Expands the spec's space into concrete configurations, checking each.
/// Expands the spec's space into concrete configurations, checking each, with
/// the `when` of the variant each came from.
pub fn expand(spec: &SweepSpec, source: &str) -> Result<Vec<(Params, Option<Target>)>, SpecError> {
    let variants = spaces(spec);
    // Count first (checked), build after: a space of 10^12 configurations is
    // refused without allocating one.
    count_spaces(&variants)?;
    let mut out = Vec::new();
    let mut conditions = Vec::new();
    for (path, space) in variants {
        let when = match &space {
            Space::Kernel(k) => k.when.clone(),
            Space::Model(m) => m.1.clone(),
        };
        match space {
            Space::Kernel(k) => expand_kernel(&k, &path, source, &mut out)?,
            Space::Model(m) => expand_model(spec.workload, &m, &path, source, &mut out)?,
        }
        conditions.resize(out.len(), when);
        if out.len() > MAX_CONFIGS {
            return Err(SpecError {
                path,
                line: None,
                message: format!("the sweep expands into more than {MAX_CONFIGS} configurations"),
            });
        }
    }
    Ok(out.into_iter().zip(conditions).collect())
}

/// The spaces a spec crosses, with their paths: `params`, or each variant
/// merged over it.
fn spaces(spec: &SweepSpec) -> Vec<(String, Space)> {
    if spec.variants.is_empty() {
        vec![("params".to_owned(), spec.params.clone())]
    } else {
        spec.variants
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("variants[{i}]"), merge(&spec.params, v)))
            .collect()
    }
}

/// How many configurations a spec's spaces expand into, counted with
/// checked arithmetic; more than [`MAX_CONFIGS`] is an error naming the space.
fn count_spaces(variants: &[(String, Space)]) -> Result<u64, SpecError> {
    let mut count: u64 = 0;
    for (path, space) in variants {
        let n = match space {
            Space::Kernel(k) => count_kernel(k),
            Space::Model(m) => count_model(m),
        };
        count = n
            .and_then(|n| count.checked_add(n))
            .filter(|&c| c <= MAX_CONFIGS as u64)
            .ok_or_else(|| SpecError {
                path: path.clone(),
                line: None,
                message: format!(
                    "the sweep expands into more than {MAX_CONFIGS} configurations{}",
                    n.map(|n| format!(" ({n} from {path})")).unwrap_or_default()
                ),
            })?;
    }
    Ok(count)
}

/// How many configurations a kernel space crosses into; `None` past `u64`.
fn count_kernel(k: &KernelSpace) -> Option<u64> {
    fn len<T>(v: &Option<OneOrMany<T>>) -> u64 {
        v.as_ref().map_or(1, |l| l.0.len() as u64)
    }
    let Some(OneOrMany(ops)) = &k.op else {
        return Some(0);
    };
    let mut total: u64 = 0;
    for op in ops {
        let (dtypes, formats) = match op {
            KernelOp::Qmatmul => (1, len(&k.format)),
            _ => (len(&k.dtype), 1),
        };
        let variants = if op.has_variants() {
            len(&k.variant)
        } else {
            1
        };
        let n = [dtypes, formats, len(&k.shape), len(&k.threads)]
            .into_iter()
            .try_fold(variants, u64::checked_mul)?;
        total = total.checked_add(n)?;
    }
    Some(total)
}

/// How many configurations a model space crosses into; `None` past `u64`.
fn count_model(m: &ModelSpace) -> Option<u64> {
    m.0.values()
        .try_fold(1u64, |n, v| n.checked_mul(v.0.len() as u64))
}

/// Refuses, before the YAML parser sees it, a document nested deeper than
/// [`MAX_NESTING`] (deep flow collections cost the parser quadratic time)
/// or using an alias (`*name`: a few aliases of aliases expand a small
/// document into billions of values). A conservative scan: flow brackets
/// outside quotes and comments, block indentation levels, `- ` entries
/// opened on one line, and `*` where a value starts.
pub fn check_nesting(source: &str) -> Result<(), SpecError> {
    let deepest = nesting_depth(source);
    if let Some(line) = deepest.alias_line {
        return Err(SpecError {
            path: String::new(),
            line: Some(line),
            message: "aliases (`*name`) are not accepted in a sweep spec: write the values out, or share them through `params` and `variants`".to_owned(),
        });
    }
    if deepest.depth > MAX_NESTING {
        return Err(SpecError {
            path: String::new(),
            line: Some(deepest.line),
            message: format!(
                "the document nests collections more than {MAX_NESTING} deep; a sweep spec needs about 5"
            ),
        });
    }
    Ok(())
}

struct Deepest {
    depth: usize,
    line: usize,
    /// The first line with an alias, if any.
    alias_line: Option<usize>,
}

fn nesting_depth(source: &str) -> Deepest {
    let mut deepest = Deepest {
        depth: 0,
        line: 1,
        alias_line: None,
    };
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Quote state carries across lines (a quoted scalar may span lines).
    let mut quote: Option<char> = None;
    for (i, line) in source.lines().enumerate() {
        let mut block = indents.len();
        if flow == 0 && quote.is_none() {
            let body = line.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let indent = line.len() - body.len();
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - - x` opens a sequence per dash on one line.
            let dashes = body
                .split(' ')
                .take_while(|t| *t == "-" || t.is_empty())
                .filter(|t| *t == "-")
                .count();
            block = indents.len() + dashes;
        }
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    if q == '\'' && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    // A quote opens a scalar only where one may start (`it's`
                    // in a plain scalar is an apostrophe).
                    '"' | '\'' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-') => {
                        quote = Some(c)
                    }
                    '*' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-')
                        && chars
                            .peek()
                            .is_some_and(|n| n.is_alphanumeric() || "_-".contains(*n)) =>
                    {
                        deepest.alias_line.get_or_insert(i + 1);
                    }
                    '[' | '{' => {
                        flow += 1;
                        if block + flow > deepest.depth {
                            deepest.depth = block + flow;
                            deepest.line = i + 1;
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        if block > deepest.depth {
            deepest.depth = block;
            deepest.line = i + 1;
        }
    }
    deepest
}

fn merge(base: &Space, over: &Space) -> Space {
    match (base, over) {
        (Space::Kernel(b), Space::Kernel(o)) => Space::Kernel(KernelSpace {
            op: o.op.clone().or_else(|| b.op.clone()),
            dtype: o.dtype.clone().or_else(|| b.dtype.clone()),
            format: o.format.clone().or_else(|| b.format.clone()),
            shape: o.shape.clone().or_else(|| b.shape.clone()),
            threads: o.threads.clone().or_else(|| b.threads.clone()),
            variant: o.variant.clone().or_else(|| b.variant.clone()),
            when: o.when.clone(),
        }),
        (Space::Model(b), Space::Model(o)) => {
            let mut m = b.0.clone();
            m.extend(o.0.iter().map(|(k, v)| (k.clone(), v.clone())));
            Space::Model(ModelSpace(m, o.1.clone()))
        }
        // The visitor builds every space of a spec for the same workload.
        (_, over) => over.clone(),
    }
}

/// Crosses a model space into configurations and checks each with the
/// workload's typed trial; an error names the parameter's path and line.
fn expand_model(
    workload: Workload,
    m: &ModelSpace,
    path: &str,
    source: &str,
    out: &mut Vec<Params>,
) -> Result<(), SpecError> {
    let check = |p: &Params| -> Result<(), String> {
        match workload {
            Workload::Quantize => QuantizeTrial::from_params(p).map(drop),
            Workload::Generate => GenerateTrial::from_params(p).map(drop),
            Workload::Eval => {
                let t = EvalTrial::from_params(p)?;
                if t.is_reference {
                    return Err(format!(
                        "parameter `{ROLE}` is set by the controller, not in a spec"
                    ));
                }
                Ok(())
            }
            Workload::Kernel => Ok(()),
        }
    };
    let known = match workload {
        Workload::Quantize => QuantizeTrial::PARAMS,
        Workload::Generate => GenerateTrial::PARAMS,
        Workload::Eval => &EvalTrial::PARAMS[..EvalTrial::PARAMS.len() - 1],
        Workload::Kernel => &[],
    };
    if let Some(k) = m.0.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(SpecError::at(
            source,
            &format!("{path}.{k}"),
            k,
            None,
            format!(
                "unknown parameter `{k}` for workload {}; it takes: {}",
                workload.name(),
                known.join(", ")
            ),
        ));
    }
    let mut keys: Vec<&String> = m.0.keys().collect();
    keys.sort_by_key(|k| (crate::catalog::param_rank(k), (*k).clone()));
    let mut configs = vec![Params::new()];
    for key in keys {
        let values = &m.0[key].0;
        configs = configs
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
        if configs.len() > MAX_CONFIGS {
            break;
        }
    }
    for c in configs {
        if let Err(message) = check(&c) {
            // Point at the parameter the message names, if any.
            let field = c
                .keys()
                .find(|k| message.contains(&format!("`{k}`")))
                .cloned()
                .unwrap_or_else(|| "params".to_owned());
            let value = c.get(&field).map(|v| v.to_string());
            return Err(SpecError::at(
                source,
                &format!("{path}.{field}"),
                &field,
                value.as_deref(),
                message,
            ));
        }
        out.push(c);
    }
    Ok(())
}

fn list<T: Clone>(v: &Option<OneOrMany<T>>) -> Vec<Option<T>> {
    match v {
        Some(OneOrMany(items)) => items.iter().cloned().map(Some).collect(),
        None => vec![None],
    }
}

fn expand_kernel(
    k: &KernelSpace,
    path: &str,
    source: &str,
    out: &mut Vec<Params>,
) -> Result<(), SpecError> {
    let err = |field: &str, value: Option<&str>, message: String| {
        SpecError::at(source, &format!("{path}.{field}"), field, value, message)
    };
    let Some(OneOrMany(ops)) = &k.op else {
        return Err(err(
            "op",
            None,
            "missing: give `op:` (matmul, qmatmul, softmax, rmsnorm, rope or attention)".to_owned(),
        ));
    };
    if k.shape.is_none() {
        return Err(err(
            "shape",
            None,
            "missing: give at least one shape (`m,n,k` for a matmul)".to_owned(),
        ));
    }
    for op in ops {
        match op {
            KernelOp::Qmatmul if k.dtype.is_some() => {
                return Err(err(
                    "dtype",
                    None,
                    "op qmatmul multiplies f32 activations by a quantized weight: it takes `format`, not `dtype`".to_owned(),
                ))
            }
            KernelOp::Qmatmul if k.format.is_none() => {
                return Err(err(
                    "format",
                    None,
                    "missing: op qmatmul needs a quantization `format` (q4_0, q8_0, q4k, ...)"
                        .to_owned(),
                ))
            }
            KernelOp::Qmatmul => {}
            _ if k.format.is_some() => {
                return Err(err(
                    "format",
                    None,
                    format!(
                        "op {} takes `dtype`, not `format` (a quantized weight is op qmatmul)",
                        op.name()
                    ),
                ))
            }
            _ => {}
        }
        if !op.has_variants() && k.variant.is_some() {
            return Err(err(
                "variant",
                None,
                format!(
                    "op {} has no variants (softmax, rmsnorm, rope and attention do)",
                    op.name()
                ),
            ));
        }
        let dtypes = match op {
            KernelOp::Qmatmul => vec![None],
            _ => list(&k.dtype.clone().or(Some(OneOrMany(vec![DType::F32])))),
        };
        let formats = match op {
            KernelOp::Qmatmul => list(&k.format),
            _ => vec![None],
        };
        let variants: Vec<Option<Variant>> = if op.has_variants() {
            list(
                &k.variant
                    .clone()
                    .or(Some(OneOrMany(vec![op.default_variant()]))),
            )
        } else {
            vec![None]
        };
        for variant in &variants {
            for dtype in &dtypes {
                for format in &formats {
                    for shape in list(&k.shape).into_iter().flatten() {
                        let s = shape.to_string();
                        shape
                            .check_for(*op)
                            .map_err(|m| err("shape", Some(&s), m))?;
                        if let Some(f) = format {
                            if !shape.k().is_multiple_of(f.block_size()) {
                                return Err(err(
                                    "shape",
                                    Some(&s),
                                    format!(
                                        "shape `{s}`: k = {} is not a multiple of {}'s block size {}",
                                        shape.k(),
                                        f.name(),
                                        f.block_size()
                                    ),
                                ));
                            }
                        }
                        for threads in list(&k.threads) {
                            let mut p = Params::new();
                            p.insert("op".into(), ParamValue::Text(op.name().into()));
                            if let Some(v) = variant {
                                p.insert("variant".into(), ParamValue::Text(v.name().into()));
                            }
                            if let Some(d) = dtype {
                                p.insert("dtype".into(), ParamValue::Text(d.name().into()));
                            }
                            if let Some(f) = format {
                                p.insert("format".into(), ParamValue::Text(f.name().into()));
                            }
                            p.insert("shape".into(), ParamValue::Text(s.clone()));
                            if let Some(t) = threads {
                                p.insert("threads".into(), ParamValue::Int(t.0 as i64));
                            }
                            out.push(p);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A `kernel` trial's configuration, typed: what the agent runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KernelTrial {
    pub op: KernelOp,
    /// Fused kernel or naive composition (ops with variants).
    pub variant: Variant,
    /// Data type for `matmul`.
    pub dtype: DType,
    /// Weight format for `qmatmul`.
    pub format: Option<QuantFormat>,
    pub shape: Shape,
    /// Requested threads; `None` means every logical core.
    pub threads: Option<u32>,
}

impl KernelTrial {
    /// Reads and checks a trial's parameters (the receiver validates what the wire carried).
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let text = |name: &str| -> Result<Option<&str>, String> {
            match p.get(name) {
                None => Ok(None),
                Some(ParamValue::Text(s)) => Ok(Some(s)),
                Some(other) => Err(format!("parameter `{name}` = `{other}` must be text")),
            }
        };
        if let Some(unknown) = p.keys().find(|k| {
            !["op", "variant", "dtype", "format", "shape", "threads"].contains(&k.as_str())
        }) {
            return Err(format!("unknown parameter `{unknown}` for workload kernel"));
        }
        let op: KernelOp = text("op")?.ok_or("parameter `op` is missing")?.parse()?;
        let variant = match text("variant")? {
            Some(v) if op.has_variants() => v.parse()?,
            Some(_) => return Err(format!("op {} has no variants", op.name())),
            None => op.default_variant(),
        };
        let dtype = text("dtype")?
            .map(str::parse)
            .transpose()?
            .unwrap_or(DType::F32);
        let format: Option<QuantFormat> = text("format")?.map(str::parse).transpose()?;
        let shape: Shape = text("shape")?
            .ok_or("parameter `shape` is missing")?
            .parse()?;
        let threads = match p.get("threads") {
            None => None,
            Some(ParamValue::Int(t)) if (1..=1024).contains(t) => Some(*t as u32),
            Some(other) => return Err(format!("parameter `threads` = `{other}` must be 1..=1024")),
        };
        shape.check_for(op)?;
        if op == KernelOp::Qmatmul {
            let f = format.ok_or("op qmatmul needs parameter `format`")?;
            if !shape.k().is_multiple_of(f.block_size()) {
                return Err(format!(
                    "k = {} is not a multiple of {}'s block size {}",
                    shape.k(),
                    f.name(),
                    f.block_size()
                ));
            }
        }
        Ok(KernelTrial {
            op,
            variant,
            dtype,
            format,
            shape,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Variant;

    const GOOD: &str = r#"
name: t
workload: kernel
params:
  shape: ["64,128,256", "1,256,512"]
  threads: 1
variants:
  - op: matmul
    dtype: [f32, f16]
  - op: qmatmul
    format: [q4_0, q8_0]
"#;

    #[test]
    fn expands_variants_as_a_union_of_grids() {
        let parsed = parse(GOOD).unwrap();
        // matmul: 2 dtypes x 2 shapes; qmatmul: 2 formats x 2 shapes
        assert_eq!(parsed.configs.len(), 8);
        let labels: Vec<String> = parsed.configs.iter().map(crate::params::label).collect();
        assert_eq!(labels[0], "op=matmul dtype=f32 shape=64,128,256 threads=1");
        assert!(labels.contains(&"op=qmatmul format=q8_0 shape=1,256,512 threads=1".to_owned()));
        assert_eq!(parsed.spec.placement, Placement::EachClass);
    }

    fn err(src: &str) -> SpecError {
        parse(src).expect_err("spec should be refused")
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = err(
            "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  colour: red\n",
        );
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert!(e.path.starts_with("params"), "{e}");
        assert!(
            e.message.starts_with("unknown field"),
            "no doubled path: {e}"
        );
    }

    #[test]
    fn unknown_workload_and_op_are_refused_with_line() {
        let e = err("name: t\nworkload: training\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("training"), "{e}");
        let e = err("name: t\nworkload: kernel\nparams:\n  op: [matmul, conv]\n  shape: 1,2,3\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().contains("conv"), "{e}");
        assert!(e.path.starts_with("params.op"), "{e}");
    }

    #[test]
    fn wrong_type_and_empty_list_are_refused() {
        let e = err(
            "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  threads: many\n",
        );
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.path.contains("threads"), "{e}");
        let e = err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: []\n");
        assert!(e.message.contains("empty list"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let e = err("name: t\nworkload: kernel\nparams:\n  op: qmatmul\n  format: q4k\n  shape: \"1,64,100\"\n");
        assert!(e.message.contains("block size 256"), "{e}");
        assert_eq!(e.path, "params.shape");
        assert_eq!(e.line, Some(6), "{e}");
        let e = err("name: t\nworkload: kernel\nparams:\n  op: qmatmul\n  shape: 1,2,32\n");
        assert_eq!(e.path, "params.format", "{e}");
        let e = err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 0,2,3\n");
        assert!(e.message.contains("size 1 = 0"), "{e}");
    }

    #[test]
    fn random_search_samples_the_grid_reproducibly() {
        let spec = |seed: u64| {
            format!("name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\", \"2,8,8\", \"3,8,8\", \"4,8,8\", \"5,8,8\", \"6,8,8\"]\n  threads: [1, 2]\nsearch: {{strategy: random, samples: 4, seed: {seed}}}\n")
        };
        let a = parse(&spec(7)).unwrap();
        assert_eq!(a.configs.len(), 4);
        assert_eq!(
            a.configs,
            parse(&spec(7)).unwrap().configs,
            "same seed, same sample"
        );
        assert_ne!(a.configs, parse(&spec(8)).unwrap().configs);
        let e = err(
            "name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\nsearch: random\n",
        );
        assert!(e.message.contains("needs `samples`"), "{e}");
        let e =
            err("name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\nsearch: tpe\n");
        assert!(e.message.contains("`tpe`"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn numeric_ranges_expand_and_bad_ones_name_the_field() {
        let threads = |range: &str| -> Vec<String> {
            parse(&format!(
                "name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\n  threads: {range}\n"
            ))
            .unwrap()
            .configs
            .iter()
            .map(|c| c["threads"].to_string())
            .collect()
        };
        assert_eq!(threads("{min: 1, max: 4}"), ["1", "2", "3", "4"]);
        assert_eq!(threads("{min: 2, max: 9, step: 3}"), ["2", "5", "8"]);
        assert_eq!(
            threads("{min: 1, max: 40, log: true}"),
            ["1", "2", "4", "8", "16", "32"]
        );
        assert_eq!(
            threads("{min: 1, max: 100, log: true, count: 3}"),
            ["1", "10", "100"]
        );
        let model = parse(
            "name: g\nworkload: generate\nparams:\n  model: m.gguf\n  threads: {min: 1, max: 2}\n",
        )
        .unwrap();
        assert_eq!(model.configs.len(), 2);
        for (range, needle) in [
            ("{min: 4, max: 1}", "min = 4 must be at most max = 1"),
            ("{min: 1}", "needs `min` and `max`"),
            ("{min: 0, max: 8, log: true}", "min > 0"),
            ("{min: 1, max: 8, stride: 2}", "unknown field `stride`"),
            ("{min: 1, max: 2000}", "between 1 and 1024"),
        ] {
            let e = err(&format!(
                "name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\n  threads: {range}\n"
            ));
            assert!(e.message.contains(needle), "{range}: {e}");
            assert_eq!(e.path, "params.threads", "{e}");
            assert_eq!(e.line, Some(6), "{e}");
        }
    }

    #[test]
    fn adaptive_search_and_budgets_are_checked_against_the_workload() {
        let base = "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\", \"2,8,8\", \"3,8,8\"]\n  threads: [1, 2]\n";
        let p = parse(&format!(
            "{base}search: {{strategy: tpe, trials: 3, objective: {{maximize: gflop_per_s}}, constraints: [\"cov <= 0.1\"]}}\n"
        ))
        .unwrap();
        assert!(p.spec.search.is_adaptive());
        assert_eq!(
            p.configs.len(),
            6,
            "an adaptive search keeps the whole space"
        );
        let e = err(&format!(
            "{base}search: {{strategy: tpe, trials: 3, objective: {{maximize: decode_tokens_per_s}}}}\n"
        ));
        assert!(
            e.message
                .contains("reports no metric `decode_tokens_per_s`"),
            "{e}"
        );
        assert_eq!(e.path, "search.objective");
        assert_eq!(e.line, Some(7), "{e}");
        let p = parse(&format!(
            "{base}repeats: 2\nbudget: {{max_trials: 5, max_duration: 2m}}\n"
        ))
        .unwrap();
        assert_eq!(
            p.configs.len(),
            2,
            "5 trials at 2 repeats: the first 2 configurations"
        );
        assert_eq!(p.spec.budget.max_duration_s, Some(120));
        let e = err(&format!("{base}repeats: 3\nbudget: {{max_trials: 2}}\n"));
        assert!(e.message.contains("less than repeats"), "{e}");
    }

    #[test]
    fn variants_say_which_devices_they_are_for() {
        let p = parse(
            "name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nvariants:\n  - threads: [1, 2]\n    when: {kind: cpu}\n  - when: {kind: gpu}\n",
        )
        .unwrap();
        assert_eq!(p.configs.len(), 3);
        let kinds: Vec<String> = p
            .conditions
            .iter()
            .map(|w| serde_json::to_string(&w.as_ref().unwrap().kind).unwrap())
            .collect();
        assert_eq!(kinds, ["[\"cpu\"]", "[\"cpu\"]", "[\"gpu\"]"]);
        assert!(!p.configs[2].contains_key("threads"));
        let m = parse(
            "name: g\nworkload: generate\nparams:\n  model: m.gguf\nvariants:\n  - threads: [1, 2]\n    when: {select: \"labels.site == lab\"}\n  - format: q8_0\n",
        )
        .unwrap();
        assert_eq!(m.configs.len(), 3);
        assert!(m.conditions[0].is_some() && m.conditions[2].is_none());
        let e = err("name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n  when: {kind: cpu}\n");
        assert!(e.message.contains("belongs in a variant"), "{e}");
        assert_eq!(e.line, Some(6), "{e}");
        let e = err("name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nplacement: any\nvariants:\n  - when: {kind: cpu}\n");
        assert!(e.message.contains("needs placement"), "{e}");
        let e = err("name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nvariants:\n  - when: {kind: tpu}\n");
        assert!(e.message.contains("tpu"), "{e}");
    }

    #[test]
    fn kernel_ops_check_shape_arity_and_variants() {
        let e = err("name: t\nworkload: kernel\nparams:\n  op: softmax\n  shape: 1,2,3\n");
        assert!(e.message.contains("rows,cols"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        let e = err(
            "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  variant: fused\n",
        );
        assert_eq!(e.path, "params.variant", "{e}");
        let p = parse("name: t\nworkload: kernel\nparams:\n  op: rope\n  shape: 1,9,256,64\n  variant: [fused, naive]\n").unwrap();
        assert_eq!(p.configs.len(), 2);
        let t = KernelTrial::from_params(&p.configs[1]).unwrap();
        assert_eq!((t.op, t.variant), (KernelOp::Rope, Variant::Naive));
        assert_eq!(
            crate::catalog::capability("kernel", &p.configs[0]),
            "kernel/rope/fused"
        );
    }

    #[test]
    fn model_workloads_check_every_configuration() {
        let good = "name: q\nworkload: quantize\nparams:\n  model: m.gguf\n  format: [q8_0, q4k]\n  threads: [1, 2]\n";
        let p = parse(good).unwrap();
        assert_eq!(p.configs.len(), 4);
        assert_eq!(
            crate::catalog::capability("quantize", &p.configs[0]),
            "quantize"
        );
        let e =
            err("name: q\nworkload: quantize\nparams:\n  model: m.gguf\n  format: [q8_0, q9k]\n");
        assert_eq!(e.path, "params.format", "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("`q9k`"), "{e}");
        let e = err("name: g\nworkload: generate\nparams:\n  model: ../m.gguf\n");
        assert!(e.message.contains("escapes"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");
        let e = err("name: g\nworkload: generate\nparams:\n  model: m.gguf\n  temperature: 0.7\n");
        assert_eq!(e.path, "params.temperature", "{e}");
        let e = err("name: e\nworkload: eval\nparams:\n  model: m.gguf\n  role: reference\n");
        assert!(e.message.contains("unknown parameter `role`"), "{e}");
        let e = err("name: e\nworkload: eval\nparams:\n  model: m.gguf\n  context: 8\n");
        assert!(e.message.contains("`context` = `8`"), "{e}");
    }

    #[test]
    fn kernel_trial_round_trips_through_params() {
        let parsed = parse(GOOD).unwrap();
        for c in &parsed.configs {
            let t = KernelTrial::from_params(c).unwrap();
            assert_eq!(t.threads, Some(1));
        }
        let mut bad = parsed.configs[0].clone();
        bad.insert("shape".into(), ParamValue::Int(3));
        assert!(KernelTrial::from_params(&bad)
            .unwrap_err()
            .contains("shape"));
    }

    #[test]
    fn a_huge_expansion_is_counted_and_refused_before_it_is_built() {
        // 300 x 300 x 256 prompt/new/batch values: 23 million configurations.
        let src = "name: t\nworkload: generate\nparams:\n  model: m.gguf\n  format: q8_0\n  prompt_tokens: {min: 1, max: 300}\n  new_tokens: {min: 1, max: 300}\n  batch: {min: 1, max: 256}\n";
        let e = err(src);
        assert!(e.message.contains("more than 100000 configurations"), "{e}");
        // A count past u64 is refused, not wrapped.
        let shapes: Vec<String> = (1..=4096).map(|i| format!("\"{i},64,64\"")).collect();
        let list = format!("[{}]", shapes.join(","));
        let src = format!(
            "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: {list}\n  threads: {{min: 1, max: 1024}}\n"
        );
        assert!(err(&src).message.contains("more than 100000"));
        // Within the configuration cap, repeats still count: 4096 x 1000 trials.
        let src = format!(
            "name: t\nworkload: kernel\nrepeats: 1000\nparams:\n  op: matmul\n  shape: {list}\n"
        );
        let e = err(&src);
        assert_eq!(e.path, "repeats");
        assert!(
            e.message.contains("4096 configurations x 1000 repeats"),
            "{e}"
        );
        let tight = super::parse_with(GOOD, &super::Limits { max_trials: 3 }).unwrap_err();
        assert!(tight.message.contains("limit of 3 trials"), "{tight}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(
            "name: t\nworkload: kernel\nparams: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = err(&deep);
        assert!(e.message.contains("more than 32 deep"), "{e}");
        assert_eq!(e.line, Some(3));
        let mut block = String::from("name: t\n");
        for i in 0..40 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert!(err(&block).message.contains("deep"));
        let dashes = format!("name: t\nx:\n  {}a\n", "- ".repeat(40));
        assert!(err(&dashes).message.contains("deep"));
        // Brackets and quotes inside scalars and comments do not count.
        let fine = format!(
            "{GOOD}description: \"{}\" # {}\nx: it's [fine\n",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(super::nesting_depth(&fine).depth < 10);
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // "Billion laughs": nine levels of aliases, each ten times the last.
        let mut src = String::from("name: t\nworkload: kernel\nx0: &a0 [\"lol\"]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(",");
            src.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
        }
        src.push_str("params: {op: matmul, shape: *a9}\n");
        let e = err(&src);
        assert!(e.message.contains("aliases"), "{e}");
        assert_eq!(e.line, Some(4));
        // `*` inside text is no alias.
        let fine = format!("{GOOD}description: \"*not an alias\" # *nor this\n");
        assert!(super::parse(&fine).is_ok());
    }
}

#[cfg(test)]
mod examples {
    /// Every shipped example parses (and expands) as it is.
    #[test]
    fn every_example_spec_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let parsed =
                    super::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!parsed.configs.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 8, "{n} examples");
    }
}
