//! Parameter spaces: each parameter one value, a list or a numeric range.

use super::document::set_once;
use super::Target;
use crate::catalog::{DType, KernelOp, QuantFormat, Shape, Variant, Workload};
use crate::params::ParamValue;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

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
