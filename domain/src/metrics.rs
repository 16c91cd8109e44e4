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
