//! The top-level mapping of a spec: [`SweepSpec`] and its field-by-field reader.

use super::space::{KernelSpace, ModelSpace, OneOrMany, Space};
use super::{Budget, Harness, Placement, Search, Target, SPEC_VERSION};
use crate::catalog::Workload;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

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
    /// Seed of the trials' run order ([`crate::order::interleave`]); none:
    /// derived from the sweep's id ([`crate::order::default_seed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_seed: Option<u64>,
    /// `serve`: the latency bounds goodput and capacity are judged against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<crate::serve::Slo>,
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
    "order_seed",
    "slo",
];

impl<'de> Deserialize<'de> for SweepSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

struct SpecVisitor;

/// A value read with a check of its own: an error of the check is the
/// value's error, so it carries the field's path (`repeats`, not the
/// document) and the rest of the spec can still be checked.
struct Checked<T, F>(F, std::marker::PhantomData<T>);

fn checked<T, F: FnOnce(&T) -> Result<(), String>>(f: F) -> Checked<T, F> {
    Checked(f, std::marker::PhantomData)
}

impl<'de, T, F> de::DeserializeSeed<'de> for Checked<T, F>
where
    T: Deserialize<'de>,
    F: FnOnce(&T) -> Result<(), String>,
{
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let v = T::deserialize(d)?;
        (self.0)(&v).map_err(de::Error::custom)?;
        Ok(v)
    }
}

pub(super) fn set_once<T, E: de::Error>(
    slot: &mut Option<T>,
    v: T,
    key: &'static str,
) -> Result<(), E> {
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
        let mut order_seed = None;
        let mut slo: Option<crate::serve::Slo> = None;
        let need_workload = |w: Option<Workload>, key: &str| {
            w.ok_or_else(|| de::Error::custom(format!("`workload` must be given before `{key}`")))
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => {
                    let v: u32 = map.next_value_seed(checked(|v: &u32| {
                        if *v == SPEC_VERSION {
                            Ok(())
                        } else {
                            Err(format!(
                                "version {v} is not supported; this build reads version {SPEC_VERSION}"
                            ))
                        }
                    }))?;
                    set_once(&mut version, v, "version")?
                }
                "name" => {
                    let v: String = map.next_value_seed(checked(|v: &String| {
                        if v.trim().is_empty() || v.len() > 200 {
                            Err(format!("name `{v}` must be 1 to 200 characters"))
                        } else {
                            Ok(())
                        }
                    }))?;
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
                    let v: u32 = map.next_value_seed(checked(|v: &u32| {
                        if (1..=1000).contains(v) {
                            Ok(())
                        } else {
                            Err(format!("repeats = {v} must be between 1 and 1000"))
                        }
                    }))?;
                    set_once(&mut repeats, v, "repeats")?
                }
                "harness" => {
                    let h: Harness = map.next_value_seed(checked(|h: &Harness| {
                        if h.min_iters == 0 {
                            Err("harness.min_iters must be at least 1".to_owned())
                        } else if h.max_time_ms < h.min_time_ms {
                            Err(format!(
                                "harness.max_time_ms = {} is less than min_time_ms = {}",
                                h.max_time_ms, h.min_time_ms
                            ))
                        } else {
                            Ok(())
                        }
                    }))?;
                    set_once(&mut harness, h, "harness")?
                }
                "budget" => set_once(&mut budget, map.next_value()?, "budget")?,
                "order_seed" => set_once(&mut order_seed, map.next_value()?, "order_seed")?,
                "slo" => {
                    if need_workload(workload, "slo")? != Workload::Serve {
                        return Err(de::Error::custom(
                            "`slo` is for workload serve (latency bounds of a load test)",
                        ));
                    }
                    let v: crate::serve::Slo =
                        map.next_value_seed(checked(|v: &crate::serve::Slo| v.check()))?;
                    set_once(&mut slo, v, "slo")?
                }
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
            order_seed,
            slo,
        })
    }
}
