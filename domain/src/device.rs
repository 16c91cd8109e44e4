//! Device classes: devices that should measure the same.

/// The class of a CPU: its model and logical core count (`cpu: AMD EPYC 7B13 x2`).
pub fn cpu_class(model: &str, logical_cores: u32) -> String {
    format!("cpu: {} x{logical_cores}", model.trim())
}

/// The class of a GPU: its model name and memory in GiB (`NVIDIA H100 80GB HBM3 79GiB`).
pub fn gpu_class(model: &str, memory_bytes: u64) -> String {
    let gib = (memory_bytes as f64 / (1u64 << 30) as f64).round() as u64;
    format!("{} {gib}GiB", model.trim())
}

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A device as sweep targets see it: its own properties and its agent's.
#[derive(Clone, Copy, Debug)]
pub struct DeviceView<'a> {
    /// `cpu` or `gpu`.
    pub kind: &'a str,
    pub class: &'a str,
    /// Model name (`NVIDIA H100 80GB HBM3`, `AMD EPYC 7B13`).
    pub model: &'a str,
    pub vendor: &'a str,
    pub memory_bytes: u64,
    pub cores: u32,
    pub compute_capability: &'a str,
    /// The agent's name and host.
    pub agent: &'a str,
    pub host: &'a str,
    /// The agent's labels (`chimera-agent --label KEY=VALUE`).
    pub labels: &'a BTreeMap<String, String>,
}

/// What a selector reads.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Kind,
    Class,
    Model,
    Vendor,
    MemoryGb,
    Cores,
    ComputeCapability,
    Agent,
    Host,
    Label(String),
    /// `gpu.FIELD` / `cpu.FIELD`: that field, and only devices of that kind match.
    Scoped(&'static str, Box<Field>),
}

const FIELDS: &str = "kind, class, model (or name), vendor, memory_gb, cores, \
     compute_capability, agent, host, labels.KEY, and gpu.FIELD / cpu.FIELD \
     (that field, on devices of that kind only)";

impl Field {
    fn parse(s: &str) -> Option<Field> {
        if let Some(k) = s.strip_prefix("labels.") {
            let ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            return ok.then(|| Field::Label(k.to_owned()));
        }
        for scope in ["gpu", "cpu"] {
            if let Some(rest) = s.strip_prefix(scope).and_then(|r| r.strip_prefix('.')) {
                return match Field::parse(rest)? {
                    Field::Scoped(..) | Field::Kind => None,
                    f => Some(Field::Scoped(scope, Box::new(f))),
                };
            }
        }
        Some(match s {
            "kind" => Field::Kind,
            "class" => Field::Class,
            "model" | "name" => Field::Model,
            "vendor" => Field::Vendor,
            "memory_gb" => Field::MemoryGb,
            "cores" => Field::Cores,
            "compute_capability" => Field::ComputeCapability,
            "agent" => Field::Agent,
            "host" => Field::Host,
            _ => return None,
        })
    }

    fn numeric(&self) -> bool {
        match self {
            Field::MemoryGb | Field::Cores | Field::ComputeCapability | Field::Label(_) => true,
            Field::Scoped(_, f) => f.numeric(),
            _ => false,
        }
    }

    /// The field's value on a device; `None` when it has none (a label it
    /// lacks, a `gpu.` field of a CPU).
    fn value(&self, d: &DeviceView) -> Option<String> {
        Some(match self {
            Field::Kind => d.kind.to_owned(),
            Field::Class => d.class.to_owned(),
            Field::Model => d.model.to_owned(),
            Field::Vendor => d.vendor.to_owned(),
            Field::MemoryGb => format!("{}", d.memory_bytes as f64 / (1u64 << 30) as f64),
            Field::Cores => d.cores.to_string(),
            Field::ComputeCapability if d.compute_capability.is_empty() => return None,
            Field::ComputeCapability => d.compute_capability.to_owned(),
            Field::Agent => d.agent.to_owned(),
            Field::Host => d.host.to_owned(),
            Field::Label(k) => d.labels.get(k)?.clone(),
            Field::Scoped(kind, f) if *kind == d.kind => return f.value(d),
            Field::Scoped(..) => return None,
        })
    }
}

/// A comparison of a selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    /// Contains, ignoring case.
    Like,
    NotLike,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition on a device (`gpu.name ~ "H100"`, `labels.site == lab`,
/// `memory_gb >= 24`); a sweep's `target.select` keeps devices meeting all of
/// its selectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    text: String,
    field: Field,
    op: Op,
    value: String,
}

impl Selector {
    /// Whether the device meets the condition. A device without the field
    /// (a label its agent lacks) meets only `!=` and `!~`; a `gpu.` or
    /// `cpu.` field is met only by devices of that kind.
    pub fn matches(&self, d: &DeviceView) -> bool {
        if let Field::Scoped(kind, _) = &self.field {
            if *kind != d.kind {
                return false;
            }
        }
        let Some(v) = self.field.value(d) else {
            return matches!(self.op, Op::Ne | Op::NotLike);
        };
        let num = |s: &str| s.trim().parse::<f64>().ok();
        match self.op {
            Op::Eq | Op::Ne => {
                let eq = match (num(&v), num(&self.value)) {
                    (Some(a), Some(b)) if self.field.numeric() => a == b,
                    _ => v == self.value,
                };
                eq == (self.op == Op::Eq)
            }
            Op::Like | Op::NotLike => {
                let has = v.to_lowercase().contains(&self.value.to_lowercase());
                has == (self.op == Op::Like)
            }
            Op::Lt | Op::Le | Op::Gt | Op::Ge => match (num(&v), num(&self.value)) {
                (Some(a), Some(b)) => match self.op {
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let ops = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("!~", Op::NotLike),
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("~", Op::Like),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let (at, op, len) = ops
            .iter()
            .filter_map(|(sym, op)| text.find(sym).map(|i| (i, *op, sym.len())))
            .min_by_key(|(i, _, len)| (*i, usize::MAX - len))
            .ok_or_else(|| {
                format!(
                    "selector `{text}` is not `FIELD OP VALUE` (OP: ==, !=, ~, !~, <, <=, >, >=)"
                )
            })?;
        let name = text[..at].trim();
        let raw = text[at + len..].trim();
        let value = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw)
            .to_owned();
        let field = Field::parse(name).ok_or_else(|| {
            format!("selector `{text}`: unknown field `{name}`; fields: {FIELDS}")
        })?;
        if value.is_empty() {
            return Err(format!("selector `{text}` has no value"));
        }
        let ordered = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
        if ordered && !field.numeric() {
            return Err(format!(
                "selector `{text}`: `{name}` is text; compare it with ==, !=, ~ or !~"
            ));
        }
        if ordered && value.parse::<f64>().is_err() {
            return Err(format!("selector `{text}`: `{value}` is not a number"));
        }
        Ok(Selector {
            text: text.to_owned(),
            field,
            op,
            value,
        })
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        kind: &'a str,
        model: &'a str,
        gib: u64,
        labels: &'a BTreeMap<String, String>,
    ) -> DeviceView<'a> {
        DeviceView {
            kind,
            class: model,
            model,
            vendor: "v",
            memory_bytes: gib << 30,
            cores: 16,
            compute_capability: if kind == "gpu" { "9.0" } else { "" },
            agent: "a1",
            host: "h1",
            labels,
        }
    }

    #[test]
    fn selectors_read_device_and_agent_properties() {
        let lab = BTreeMap::from([("site".to_owned(), "lab".to_owned())]);
        let none = BTreeMap::new();
        let h100 = view("gpu", "NVIDIA H100 80GB HBM3", 80, &lab);
        let cpu = view("cpu", "AMD EPYC 7B13", 24, &none);
        let sel = |s: &str| s.parse::<Selector>().unwrap();
        assert!(sel("gpu.name ~ \"H100\"").matches(&h100));
        assert!(!sel("gpu.name ~ H100").matches(&cpu), "gpu.* only on GPUs");
        assert!(!sel("gpu.memory_gb >= 1").matches(&cpu));
        assert!(sel("labels.site == lab").matches(&h100));
        assert!(!sel("labels.site == lab").matches(&cpu));
        assert!(
            sel("labels.site != lab").matches(&cpu),
            "no label: != holds"
        );
        assert!(sel("memory_gb >= 24").matches(&cpu));
        assert!(!sel("memory_gb > 24").matches(&cpu));
        assert!(sel("compute_capability >= 8.0").matches(&h100));
        assert!(sel("kind==gpu").matches(&h100));
        assert!(sel("model !~ h100").matches(&cpu));
        assert_eq!(sel(" cores <= 16 ").to_string(), "cores <= 16");
        for (bad, needle) in [
            ("gpu.nmae ~ H100", "unknown field `gpu.nmae`"),
            ("model >= 3", "is text"),
            ("memory_gb >= lots", "not a number"),
            ("memory_gb", "not `FIELD OP VALUE`"),
            ("kind ==", "has no value"),
        ] {
            let e = bad.parse::<Selector>().unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}

/// A device as an agent declared it in its hello (checked at the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Stable within the agent: `cpu` or `gpu:<index>`.
    pub id: String,
    /// `cpu` or `gpu`.
    pub kind: String,
    pub vendor: String,
    pub model: String,
    /// Device memory (GPU) or host memory (CPU), bytes.
    pub memory_bytes: u64,
    /// Logical cores (CPU) or streaming multiprocessors (GPU, 0 when unknown).
    pub cores: u32,
    /// CUDA `major.minor`; empty for a CPU.
    pub compute_capability: String,
    /// NVIDIA driver version; empty for a CPU.
    pub driver_version: String,
    /// Devices that should measure the same.
    pub class: String,
    /// The workload ops the agent can run on it (`kernel/matmul`); none: it
    /// is reported but never scheduled.
    pub capabilities: Vec<String>,
    /// Why it cannot run trials (empty when it can): a GPU seen through
    /// NVML by an agent built without CUDA.
    pub unusable_reason: String,
}

impl Device {
    /// The device as sweep targets see it, on agent `agent` of host `host`.
    pub fn view<'a>(
        &'a self,
        agent: &'a str,
        host: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> DeviceView<'a> {
        DeviceView {
            kind: &self.kind,
            class: &self.class,
            model: &self.model,
            vendor: &self.vendor,
            memory_bytes: self.memory_bytes,
            cores: self.cores,
            compute_capability: &self.compute_capability,
            agent,
            host,
            labels,
        }
    }

    /// Whether the agent can run anything on it.
    pub fn usable(&self) -> bool {
        !self.capabilities.is_empty()
    }

    /// Why no trial can run on it: the agent's reason, or a generic one
    /// for a device without capabilities whose agent gave none; `None`
    /// when it is usable.
    pub fn why_unusable(&self) -> Option<String> {
        if self.usable() {
            return None;
        }
        Some(if self.unusable_reason.trim().is_empty() {
            "its agent reports no workload it can run on it".to_owned()
        } else {
            self.unusable_reason.trim().to_owned()
        })
    }
}

impl From<chimera_proto::v1::Device> for Device {
    fn from(d: chimera_proto::v1::Device) -> Self {
        Device {
            id: d.id,
            kind: d.kind,
            vendor: d.vendor,
            model: d.model,
            memory_bytes: d.memory_bytes,
            cores: d.cores,
            compute_capability: d.compute_capability,
            driver_version: d.driver_version,
            class: d.device_class,
            capabilities: d.capabilities,
            unusable_reason: d.unusable_reason,
        }
    }
}

impl From<&Device> for chimera_proto::v1::Device {
    fn from(d: &Device) -> Self {
        chimera_proto::v1::Device {
            id: d.id.clone(),
            kind: d.kind.clone(),
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            memory_bytes: d.memory_bytes,
            cores: d.cores,
            compute_capability: d.compute_capability.clone(),
            driver_version: d.driver_version.clone(),
            device_class: d.class.clone(),
            capabilities: d.capabilities.clone(),
            unusable_reason: d.unusable_reason.clone(),
        }
    }
}
