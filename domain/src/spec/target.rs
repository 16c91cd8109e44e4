//! Where a sweep's configurations run: [`Placement`] and the device [`Target`].

use super::space::OneOrMany;
use crate::device::{DeviceView, Selector};
use serde::{Deserialize, Serialize};

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
