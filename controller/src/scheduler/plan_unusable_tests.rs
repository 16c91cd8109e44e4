//! [`only_unusable`]: a sweep only present-but-unusable devices match is
//! refused with their reasons; one a usable device matches, or none, is not.

use super::{only_unusable, FleetDevice};
use chimera_domain::device::Device;
use chimera_domain::AgentId;
use std::collections::BTreeMap;

fn device(id: &str, kind: &str, caps: &[&str], reason: &str) -> Device {
    Device {
        id: id.to_owned(),
        kind: kind.to_owned(),
        vendor: "test".to_owned(),
        model: format!("{kind} model"),
        memory_bytes: 1 << 30,
        cores: 2,
        compute_capability: String::new(),
        driver_version: String::new(),
        class: format!("{kind}: test"),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        unusable_reason: reason.to_owned(),
    }
}

fn refusal(target: &str, devices: &[Device]) -> Option<String> {
    let agent = AgentId("a".to_owned());
    let labels = BTreeMap::new();
    let fleet: Vec<FleetDevice> = devices
        .iter()
        .map(|d| FleetDevice {
            schedulable: d.usable(),
            agent: &agent,
            host: "h",
            labels: &labels,
            device: d,
        })
        .collect();
    let spec = format!(
        "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\ntarget: {target}\n"
    );
    let parsed = chimera_domain::spec::parse(&spec).unwrap();
    only_unusable(&parsed, &fleet).map(|e| e.to_string())
}

#[test]
fn only_unusable_devices_matching_refuses_with_their_reasons() {
    let cpu = device("cpu", "cpu", &["kernel/matmul"], "");
    let no_cuda = device("gpu:0", "gpu", &[], "built without CUDA");
    let silent = device("gpu:1", "gpu", &[], "");
    let e = refusal("{kind: gpu}", &[cpu.clone(), no_cuda.clone(), silent]).unwrap();
    assert!(e.contains("line 6: target"), "{e}");
    assert!(e.contains("a/gpu:0 (gpu: test): built without CUDA"), "{e}");
    assert!(
        e.contains("a/gpu:1 (gpu: test): its agent reports no workload it can run on it"),
        "{e}"
    );
    // A usable device matches: planning goes on as before.
    assert_eq!(
        refusal("{kind: cpu}", &[cpu.clone(), no_cuda.clone()]),
        None
    );
    let usable_gpu = device("gpu:2", "gpu", &["kernel/matmul"], "");
    assert_eq!(refusal("{kind: gpu}", &[no_cuda.clone(), usable_gpu]), None);
    // Nothing matches at all: the sweep may wait for an agent to join.
    assert_eq!(refusal("{kind: gpu}", &[cpu]), None);
}
