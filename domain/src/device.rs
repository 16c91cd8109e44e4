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
