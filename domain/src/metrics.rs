//! Metric names: one list in one place, each with its unit in the name.

/// Median latency of one measured iteration, milliseconds.
pub const LATENCY_MS_P50: &str = "latency_ms_p50";
/// 99th-percentile latency of one measured iteration, milliseconds.
pub const LATENCY_MS_P99: &str = "latency_ms_p99";
/// Mean latency of one measured iteration, milliseconds.
pub const LATENCY_MS_MEAN: &str = "latency_ms_mean";
/// Coefficient of variation of the iteration latencies (stddev / mean), unitless.
pub const COV: &str = "cov";
/// Number of measured iterations.
pub const ITERATIONS: &str = "iterations";
/// Useful floating-point work per second at the median latency, GFLOP/s.
pub const GFLOP_PER_S: &str = "gflop_per_s";
/// Warm-up iterations run before measuring.
pub const WARMUP_ITERATIONS: &str = "warmup_iterations";
/// Wall time of the measured window, milliseconds.
pub const MEASURE_MS: &str = "measure_ms";

/// Whether a larger value of the metric is better (throughput) or worse
/// (latency, variation, error). Unknown metrics count as lower-is-better.
pub fn higher_is_better(name: &str) -> bool {
    name.ends_with("_per_s")
        || name.starts_with("gflop")
        || matches!(name, "top1_agree" | "cosine_min" | "roofline_frac")
}

/// The metrics a results table shows for a workload, headline first.
pub fn headline(workload: crate::catalog::Workload) -> &'static [&'static str] {
    use crate::catalog::Workload;
    match workload {
        Workload::Kernel => &[
            GFLOP_PER_S,
            "gb_per_s",
            "roofline_frac",
            LATENCY_MS_P50,
            LATENCY_MS_P99,
            COV,
            ITERATIONS,
        ],
        Workload::Quantize => &[
            "bits_per_weight",
            "size_bytes",
            "rmse",
            "max_abs_err",
            "cosine_min",
            "quantize_s",
        ],
        Workload::Generate => &[
            "decode_tokens_per_s",
            "decode_roofline_frac",
            "prefill_tokens_per_s",
            "ttft_ms",
            "decode_ms_p50",
            "decode_ms_p99",
            "peak_rss_bytes",
            COV,
        ],
        Workload::Eval => &["perplexity", "kl_mean", "kl_p99", "top1_agree", "eval_s"],
    }
}

/// The unit of a metric, from its name, for printing.
pub fn unit(name: &str) -> &'static str {
    if name.contains("gflop_per_s") {
        "GFLOP/s"
    } else if name.contains("gb_per_s") {
        "GB/s"
    } else if name.contains("tokens_per_s") {
        "tokens/s"
    } else if name.starts_with("kl_") || name.starts_with("nll") {
        "nats"
    } else if name.contains("_ms") {
        "ms"
    } else if name.ends_with("_bytes") {
        "bytes"
    } else if name.ends_with("_s") && !name.ends_with("_per_s") {
        "s"
    } else {
        ""
    }
}

/// Metrics every workload's trials may carry: the telemetry summary
/// (present when the device exposes the sensor).
const TELEMETRY: &[&str] = &[
    "telemetry_samples",
    "energy_j",
    "energy_j_net",
    "joules_per_token",
    "joules_per_op",
    "idle_power_w",
    "power_w_mean",
    "power_w_max",
    "temp_c_max",
    "throttled_frac",
    "cpu_util_pct_mean",
    "cpu_mhz_mean",
    "cpu_mhz_min",
    "gpu_util_pct_mean",
    "rss_bytes_max",
    "device_mem_used_bytes_max",
];

/// Every metric a workload's trials report (beyond its headline), as in
/// docs/sweep-spec.md.
fn workload_metrics(workload: crate::catalog::Workload) -> &'static [&'static str] {
    use crate::catalog::Workload;
    match workload {
        Workload::Kernel => &[
            "roofline_bw_gb_per_s",
            "roofline_peak_gflop_per_s",
            LATENCY_MS_MEAN,
            WARMUP_ITERATIONS,
            MEASURE_MS,
        ],
        Workload::Quantize => &[
            "parameters",
            "quantize_gb_per_s",
            "fallback_tensors",
            "file_bytes",
        ],
        Workload::Generate => &["load_s", "weight_bytes", ITERATIONS],
        Workload::Eval => &["nll_mean", "scored_tokens", "reference_bytes", "load_s"],
    }
}

/// The names [`reported`] accepts for a workload, headline first.
pub fn reported_list(workload: crate::catalog::Workload) -> Vec<&'static str> {
    headline(workload)
        .iter()
        .chain(workload_metrics(workload))
        .chain(TELEMETRY)
        .copied()
        .collect()
}

/// Whether trials of the workload report a metric of this name (a search
/// objective or constraint must name one).
pub fn reported(workload: crate::catalog::Workload, name: &str) -> bool {
    reported_list(workload).contains(&name)
}
