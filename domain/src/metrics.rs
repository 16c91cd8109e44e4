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
    name.ends_with("_per_s") || name.starts_with("gflop") || name == "top1_agree"
}

/// The unit of a metric, from its name, for printing.
pub fn unit(name: &str) -> &'static str {
    if name.contains("gflop_per_s") {
        "GFLOP/s"
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
