//! Metric names: one table in one place, each metric with its unit (also in
//! its name), the direction that is better, and what it measures.
//!
//! Producers (the agent's harness and workloads, the telemetry summary) and
//! consumers (comparison, diff, cost, search goals) name metrics through the
//! constants here; [`METRICS`] is the table a test checks every emitted name
//! against.

use crate::catalog::Workload;

// The measurement harness (every `kernel` and `generate` trial).
/// Median latency of one measured iteration, ms.
pub const LATENCY_MS_P50: &str = "latency_ms_p50";
/// 99th-percentile latency of one measured iteration, ms.
pub const LATENCY_MS_P99: &str = "latency_ms_p99";
/// Mean latency of one measured iteration, ms.
pub const LATENCY_MS_MEAN: &str = "latency_ms_mean";
/// Coefficient of variation of the iteration latencies (stddev / mean).
pub const COV: &str = "cov";
/// Number of measured iterations.
pub const ITERATIONS: &str = "iterations";
/// Useful floating-point work per second at the median latency, GFLOP/s.
pub const GFLOP_PER_S: &str = "gflop_per_s";
/// Warm-up iterations run before measuring.
pub const WARMUP_ITERATIONS: &str = "warmup_iterations";
/// Wall time of the measured window, ms.
pub const MEASURE_MS: &str = "measure_ms";

// `kernel`.
/// Bytes the kernel moves per second at the median latency, GB/s.
pub const GB_PER_S: &str = "gb_per_s";
/// Fraction of the device's roofline (compute or bandwidth bound) reached.
pub const ROOFLINE_FRAC: &str = "roofline_frac";
/// The device's measured memory bandwidth, the roofline's slope, GB/s.
pub const ROOFLINE_BW_GB_PER_S: &str = "roofline_bw_gb_per_s";
/// The device's measured peak compute, the roofline's ceiling, GFLOP/s.
pub const ROOFLINE_PEAK_GFLOP_PER_S: &str = "roofline_peak_gflop_per_s";

// `quantize`.
/// Bits of the quantized weights per parameter.
pub const BITS_PER_WEIGHT: &str = "bits_per_weight";
/// Bytes of the quantized weights, bytes.
pub const SIZE_BYTES: &str = "size_bytes";
/// Root-mean-square error of the weights against the source.
pub const RMSE: &str = "rmse";
/// Largest absolute error of one weight against the source.
pub const MAX_ABS_ERR: &str = "max_abs_err";
/// Lowest cosine similarity of a tensor to its source.
pub const COSINE_MIN: &str = "cosine_min";
/// Time the conversion took, s.
pub const QUANTIZE_S: &str = "quantize_s";
/// Source bytes (as f32) converted per second, GB/s.
pub const QUANTIZE_GB_PER_S: &str = "quantize_gb_per_s";
/// Number of weights converted.
pub const PARAMETERS: &str = "parameters";
/// Matrices stored in another format than asked (shape not a multiple of the block).
pub const FALLBACK_TENSORS: &str = "fallback_tensors";
/// Bytes of the saved GGUF file (`save: true`), bytes.
pub const FILE_BYTES: &str = "file_bytes";

// `generate`.
/// Tokens generated per second after the first, over the batch, tokens/s.
pub const DECODE_TOKENS_PER_S: &str = "decode_tokens_per_s";
/// Fraction of the memory-bandwidth bound a decode step reaches (every weight read once).
pub const DECODE_ROOFLINE_FRAC: &str = "decode_roofline_frac";
/// Prompt tokens processed per second, tokens/s.
pub const PREFILL_TOKENS_PER_S: &str = "prefill_tokens_per_s";
/// Time to the first token (median), ms.
pub const TTFT_MS: &str = "ttft_ms";
/// Median time of one decode step, ms.
pub const DECODE_MS_P50: &str = "decode_ms_p50";
/// 99th-percentile time of one decode step, ms.
pub const DECODE_MS_P99: &str = "decode_ms_p99";
/// Peak resident memory of the agent process, bytes.
pub const PEAK_RSS_BYTES: &str = "peak_rss_bytes";
/// Bytes of weights the forward pass reads per token (`generate`, `eval`), bytes.
pub const WEIGHT_BYTES: &str = "weight_bytes";
/// Time to load the model (`generate`, `eval`), s.
pub const LOAD_S: &str = "load_s";

// `eval`.
/// Perplexity of the text under the model.
pub const PERPLEXITY: &str = "perplexity";
/// Standard error of [`PERPLEXITY`] (delta method: perplexity x the standard
/// error of the mean negative log-likelihood).
pub const PERPLEXITY_SE: &str = "perplexity_se";
/// Mean negative log-likelihood per scored token, nats.
pub const NLL_MEAN: &str = "nll_mean";
/// Mean per-token NLL minus the reference's on the same tokens (paired), i.e.
/// ln(perplexity / the reference's perplexity), nats (`kl: full`).
pub const LN_PPL_RATIO: &str = "ln_ppl_ratio";
/// Standard error of [`LN_PPL_RATIO`], nats.
pub const LN_PPL_RATIO_SE: &str = "ln_ppl_ratio_se";
/// Mean KL divergence from the reference, per token, nats.
pub const KL_MEAN: &str = "kl_mean";
/// Standard error of [`KL_MEAN`] over the scored tokens, nats.
pub const KL_MEAN_SE: &str = "kl_mean_se";
/// 99th-percentile KL divergence from the reference, nats.
pub const KL_P99: &str = "kl_p99";
/// Fraction of positions whose most likely token matches the reference's.
pub const TOP1_AGREE: &str = "top1_agree";
/// Standard error of [`TOP1_AGREE`] (binomial, over the scored tokens).
pub const TOP1_AGREE_SE: &str = "top1_agree_se";
/// Time the evaluation took, s.
pub const EVAL_S: &str = "eval_s";
/// Tokens evaluated per second, tokens/s.
pub const EVAL_TOKENS_PER_S: &str = "eval_tokens_per_s";
/// Number of tokens scored.
pub const SCORED_TOKENS: &str = "scored_tokens";
/// Bytes of the reference distribution a reference trial hands on, bytes.
pub const REFERENCE_BYTES: &str = "reference_bytes";

// `serve`.
/// Median time from sending a request to its first token, ms.
pub const TTFT_MS_P50: &str = "ttft_ms_p50";
/// 90th-percentile time to first token, ms.
pub const TTFT_MS_P90: &str = "ttft_ms_p90";
/// 99th-percentile time to first token, ms.
pub const TTFT_MS_P99: &str = "ttft_ms_p99";
/// Median gap between consecutive tokens of a request, ms.
pub const ITL_MS_P50: &str = "itl_ms_p50";
/// 90th-percentile inter-token gap, ms.
pub const ITL_MS_P90: &str = "itl_ms_p90";
/// 99th-percentile inter-token gap, ms.
pub const ITL_MS_P99: &str = "itl_ms_p99";
/// Median over requests of the mean time per output token after the first, ms.
pub const TPOT_MS_P50: &str = "tpot_ms_p50";
/// Median end-to-end latency of a request, ms.
pub const E2E_MS_P50: &str = "e2e_ms_p50";
/// 99th-percentile end-to-end latency, ms.
pub const E2E_MS_P99: &str = "e2e_ms_p99";
/// Requests completed per second of the load, requests/s.
pub const REQUEST_THROUGHPUT_PER_S: &str = "request_throughput_per_s";
/// Output tokens per second of the load, over all users, tokens/s.
pub const OUTPUT_TOKENS_PER_S: &str = "output_tokens_per_s";
/// Input and output tokens per second of the load, tokens/s.
pub const TOTAL_TOKENS_PER_S: &str = "total_tokens_per_s";
/// Requests per second that met every SLO bound, requests/s.
pub const GOODPUT_REQUESTS_PER_S: &str = "goodput_requests_per_s";
/// Fraction of requests that met every SLO bound (failed requests count against).
pub const SLO_ATTAINMENT: &str = "slo_attainment";
/// Requests answered in full.
pub const REQUESTS_OK: &str = "requests_ok";
/// Requests that failed or timed out.
pub const REQUESTS_FAILED: &str = "requests_failed";
/// Mean sequences per decode step of the candle engine's running batch.
pub const BATCH_SIZE_MEAN: &str = "batch_size_mean";
/// Output tokens per second seen by one user (1000 / median TPOT), tokens/s.
pub const USER_TOKENS_PER_S: &str = "user_tokens_per_s";

// Telemetry summary (every workload, where the device has the sensor).
/// Telemetry samples taken in the measured window.
pub const TELEMETRY_SAMPLES: &str = "telemetry_samples";
/// Energy used in the measured window, J.
pub const ENERGY_J: &str = "energy_j";
/// Energy used above the idle power, J.
pub const ENERGY_J_NET: &str = "energy_j_net";
/// Energy per token (`generate`, `eval`), J.
pub const JOULES_PER_TOKEN: &str = "joules_per_token";
/// Energy per measured iteration (`kernel`), J.
pub const JOULES_PER_OP: &str = "joules_per_op";
/// Energy per weight converted (`quantize`), J.
pub const JOULES_PER_WEIGHT: &str = "joules_per_weight";
/// Mean power while idle just before the trial, W.
pub const IDLE_POWER_W: &str = "idle_power_w";
/// Mean power in the measured window, W.
pub const POWER_W_MEAN: &str = "power_w_mean";
/// Highest power sample in the measured window, W.
pub const POWER_W_MAX: &str = "power_w_max";
/// Highest temperature in the measured window, °C.
pub const TEMP_C_MAX: &str = "temp_c_max";
/// Fraction of samples taken while the clocks were throttled.
pub const THROTTLED_FRAC: &str = "throttled_frac";
/// Mean host CPU busy time, percent of all cores, %.
pub const CPU_UTIL_PCT_MEAN: &str = "cpu_util_pct_mean";
/// Mean CPU core frequency, MHz.
pub const CPU_MHZ_MEAN: &str = "cpu_mhz_mean";
/// Lowest CPU core frequency, MHz.
pub const CPU_MHZ_MIN: &str = "cpu_mhz_min";
/// Mean GPU SM clock, MHz.
pub const SM_CLOCK_MHZ_MEAN: &str = "sm_clock_mhz_mean";
/// Lowest GPU SM clock, MHz.
pub const SM_CLOCK_MHZ_MIN: &str = "sm_clock_mhz_min";
/// Mean GPU utilisation, %.
pub const GPU_UTIL_PCT_MEAN: &str = "gpu_util_pct_mean";
/// Largest resident set of the agent process, bytes.
pub const RSS_BYTES_MAX: &str = "rss_bytes_max";
/// Most device memory in use, bytes.
pub const DEVICE_MEM_USED_BYTES_MAX: &str = "device_mem_used_bytes_max";

/// Which direction of a metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (throughput, agreement, roofline fraction).
    Higher,
    /// Smaller is better (latency, error, size, energy); also the direction of
    /// counts that rank nothing (`iterations`).
    Lower,
}

/// One metric a trial may report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name, as trials report it (`decode_tokens_per_s`).
    pub name: &'static str,
    /// The unit for printing (`tokens/s`); empty when unitless.
    pub unit: &'static str,
    /// Which direction is better.
    pub better: Better,
    /// What it measures, one sentence.
    pub description: &'static str,
}

const fn m(
    name: &'static str,
    unit: &'static str,
    better: Better,
    description: &'static str,
) -> Metric {
    Metric {
        name,
        unit,
        better,
        description,
    }
}

use Better::{Higher, Lower};

/// Every metric a trial may report: the harness's, each workload's and the
/// telemetry summary's.
#[rustfmt::skip]
pub const METRICS: &[Metric] = &[
    // The measurement harness (every `kernel` and `generate` trial).
    m(LATENCY_MS_P50, "ms", Lower, "Median latency of one measured iteration."),
    m(LATENCY_MS_P99, "ms", Lower, "99th-percentile latency of one measured iteration."),
    m(LATENCY_MS_MEAN, "ms", Lower, "Mean latency of one measured iteration."),
    m(COV, "", Lower, "Coefficient of variation of the iteration latencies (stddev / mean)."),
    m(ITERATIONS, "", Lower, "Number of measured iterations."),
    m(GFLOP_PER_S, "GFLOP/s", Higher, "Useful floating-point work per second at the median latency."),
    m(WARMUP_ITERATIONS, "", Lower, "Warm-up iterations run before measuring."),
    m(MEASURE_MS, "ms", Lower, "Wall time of the measured window."),
    // `kernel`.
    m(GB_PER_S, "GB/s", Higher, "Bytes the kernel moves per second at the median latency."),
    m(ROOFLINE_FRAC, "", Higher, "Fraction of the device's roofline (compute or bandwidth bound) reached."),
    m(ROOFLINE_BW_GB_PER_S, "GB/s", Higher, "The device's measured memory bandwidth, the roofline's slope."),
    m(ROOFLINE_PEAK_GFLOP_PER_S, "GFLOP/s", Higher, "The device's measured peak compute, the roofline's ceiling."),
    // `quantize`.
    m(BITS_PER_WEIGHT, "", Lower, "Bits of the quantized weights per parameter."),
    m(SIZE_BYTES, "bytes", Lower, "Bytes of the quantized weights."),
    m(RMSE, "", Lower, "Root-mean-square error of the weights against the source."),
    m(MAX_ABS_ERR, "", Lower, "Largest absolute error of one weight against the source."),
    m(COSINE_MIN, "", Higher, "Lowest cosine similarity of a tensor to its source."),
    m(QUANTIZE_S, "s", Lower, "Time the conversion took."),
    m(QUANTIZE_GB_PER_S, "GB/s", Higher, "Source bytes (as f32) converted per second."),
    m(PARAMETERS, "", Lower, "Number of weights converted."),
    m(FALLBACK_TENSORS, "", Lower, "Matrices stored in another format than asked (shape not a multiple of the block)."),
    m(FILE_BYTES, "bytes", Lower, "Bytes of the saved GGUF file (`save: true`)."),
    // `generate`.
    m(DECODE_TOKENS_PER_S, "tokens/s", Higher, "Tokens generated per second after the first, over the batch."),
    m(DECODE_ROOFLINE_FRAC, "", Higher, "Fraction of the memory-bandwidth bound a decode step reaches (every weight read once)."),
    m(PREFILL_TOKENS_PER_S, "tokens/s", Higher, "Prompt tokens processed per second."),
    m(TTFT_MS, "ms", Lower, "Time to the first token (median)."),
    m(DECODE_MS_P50, "ms", Lower, "Median time of one decode step."),
    m(DECODE_MS_P99, "ms", Lower, "99th-percentile time of one decode step."),
    m(PEAK_RSS_BYTES, "bytes", Lower, "Peak resident memory of the agent process."),
    m(WEIGHT_BYTES, "bytes", Lower, "Bytes of weights the forward pass reads per token (`generate`, `eval`)."),
    m(LOAD_S, "s", Lower, "Time to load the model (`generate`, `eval`)."),
    // `eval`.
    m(PERPLEXITY, "", Lower, "Perplexity of the text under the model."),
    m(PERPLEXITY_SE, "", Lower, "Standard error of the perplexity (perplexity x standard error of the mean NLL)."),
    m(NLL_MEAN, "nats", Lower, "Mean negative log-likelihood per scored token."),
    m(KL_MEAN, "nats", Lower, "Mean KL divergence from the reference, per token (full vocabulary with `kl: full`; a lower bound with `kl: topk`)."),
    m(LN_PPL_RATIO, "nats", Lower, "ln(perplexity / reference perplexity): the mean per-token NLL difference from the reference on the same tokens (`kl: full`)."),
    m(LN_PPL_RATIO_SE, "nats", Lower, "Standard error of ln_ppl_ratio (paired over the scored tokens, so far tighter than perplexity_se)."),
    m(KL_MEAN_SE, "nats", Lower, "Standard error of the mean KL divergence over the scored tokens."),
    m(KL_P99, "nats", Lower, "99th-percentile KL divergence from the reference."),
    m(TOP1_AGREE, "", Higher, "Fraction of positions whose most likely token matches the reference's."),
    m(TOP1_AGREE_SE, "", Lower, "Standard error of the top-1 agreement (binomial, over the scored tokens)."),
    m(EVAL_S, "s", Lower, "Time the evaluation took."),
    m(EVAL_TOKENS_PER_S, "tokens/s", Higher, "Tokens evaluated per second."),
    m(SCORED_TOKENS, "", Lower, "Number of tokens scored."),
    m(REFERENCE_BYTES, "bytes", Lower, "Bytes of the reference distribution a reference trial hands on (`kl: topk`)."),
    // `serve`.
    m(TTFT_MS_P50, "ms", Lower, "Median time from sending a request to its first token."),
    m(TTFT_MS_P90, "ms", Lower, "90th-percentile time to first token."),
    m(TTFT_MS_P99, "ms", Lower, "99th-percentile time to first token."),
    m(ITL_MS_P50, "ms", Lower, "Median gap between consecutive tokens of a request."),
    m(ITL_MS_P90, "ms", Lower, "90th-percentile inter-token gap."),
    m(ITL_MS_P99, "ms", Lower, "99th-percentile inter-token gap."),
    m(TPOT_MS_P50, "ms", Lower, "Median over requests of the mean time per output token after the first."),
    m(E2E_MS_P50, "ms", Lower, "Median end-to-end latency of a request."),
    m(E2E_MS_P99, "ms", Lower, "99th-percentile end-to-end latency of a request."),
    m(REQUEST_THROUGHPUT_PER_S, "requests/s", Higher, "Requests completed per second of the load."),
    m(OUTPUT_TOKENS_PER_S, "tokens/s", Higher, "Output tokens per second of the load, over all users."),
    m(TOTAL_TOKENS_PER_S, "tokens/s", Higher, "Input and output tokens per second of the load."),
    m(GOODPUT_REQUESTS_PER_S, "requests/s", Higher, "Requests per second that met every SLO bound."),
    m(SLO_ATTAINMENT, "", Higher, "Fraction of requests that met every SLO bound (failed requests count against)."),
    m(REQUESTS_OK, "", Higher, "Requests answered in full."),
    m(REQUESTS_FAILED, "", Lower, "Requests that failed or timed out."),
    m(BATCH_SIZE_MEAN, "", Higher, "Mean sequences per decode step of the candle engine's running batch."),
    m(USER_TOKENS_PER_S, "tokens/s", Higher, "Output tokens per second one user sees (1000 / median TPOT)."),
    // Telemetry summary (every workload, where the device has the sensor).
    m(TELEMETRY_SAMPLES, "", Lower, "Telemetry samples taken in the measured window."),
    m(ENERGY_J, "J", Lower, "Energy used in the measured window."),
    m(ENERGY_J_NET, "J", Lower, "Energy used above the idle power."),
    m(JOULES_PER_TOKEN, "J", Lower, "Energy per token (`generate`, `eval`; per output token for `serve`)."),
    m(JOULES_PER_OP, "J", Lower, "Energy per measured iteration (`kernel`)."),
    m(JOULES_PER_WEIGHT, "J", Lower, "Energy per weight converted (`quantize`)."),
    m(IDLE_POWER_W, "W", Lower, "Mean power while idle just before the trial."),
    m(POWER_W_MEAN, "W", Lower, "Mean power in the measured window."),
    m(POWER_W_MAX, "W", Lower, "Highest power sample in the measured window."),
    m(TEMP_C_MAX, "°C", Lower, "Highest temperature in the measured window."),
    m(THROTTLED_FRAC, "", Lower, "Fraction of samples taken while the clocks were throttled."),
    m(CPU_UTIL_PCT_MEAN, "%", Lower, "Mean host CPU busy time, percent of all cores."),
    m(CPU_MHZ_MEAN, "MHz", Lower, "Mean CPU core frequency."),
    m(CPU_MHZ_MIN, "MHz", Lower, "Lowest CPU core frequency."),
    m(SM_CLOCK_MHZ_MEAN, "MHz", Lower, "Mean GPU SM clock."),
    m(SM_CLOCK_MHZ_MIN, "MHz", Lower, "Lowest GPU SM clock."),
    m(GPU_UTIL_PCT_MEAN, "%", Lower, "Mean GPU utilisation."),
    m(RSS_BYTES_MAX, "bytes", Lower, "Largest resident set of the agent process."),
    m(DEVICE_MEM_USED_BYTES_MAX, "bytes", Lower, "Most device memory in use."),
];

/// The metric of this name in [`METRICS`].
pub fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// The names of `names` that are not in [`METRICS`], in order: what a test
/// of a metric producer expects to be empty.
pub fn unlisted<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    names.into_iter().filter(|n| metric(n).is_none()).collect()
}

/// Whether a larger value of the metric is better (throughput) or worse
/// (latency, variation, error), from [`METRICS`]. A name not in the table
/// (a metric of a newer agent) is judged by its name as before the table
/// existed: `*_per_s`, `gflop*`, `top1_agree`, `cosine_min` and
/// `roofline_frac` are higher-is-better, everything else lower-is-better.
pub fn higher_is_better(name: &str) -> bool {
    match metric(name) {
        Some(m) => m.better == Higher,
        None => higher_by_name(name),
    }
}

fn higher_by_name(name: &str) -> bool {
    name.ends_with("_per_s")
        || name.starts_with("gflop")
        || matches!(name, "top1_agree" | "cosine_min" | "roofline_frac")
}

/// The unit of a metric for printing, from [`METRICS`]; a name not in the
/// table gets the unit its name suggests (`_ms` → ms, `_bytes` → bytes, ...).
pub fn unit(name: &str) -> &'static str {
    match metric(name) {
        Some(m) => m.unit,
        None => unit_by_name(name),
    }
}

fn unit_by_name(name: &str) -> &'static str {
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

/// The metrics a results table shows for a workload, headline first.
pub fn headline(workload: Workload) -> &'static [&'static str] {
    match workload {
        Workload::Kernel => &[
            GFLOP_PER_S,
            GB_PER_S,
            ROOFLINE_FRAC,
            LATENCY_MS_P50,
            LATENCY_MS_P99,
            COV,
            ITERATIONS,
        ],
        Workload::Quantize => &[
            BITS_PER_WEIGHT,
            SIZE_BYTES,
            RMSE,
            MAX_ABS_ERR,
            COSINE_MIN,
            QUANTIZE_S,
        ],
        Workload::Generate => &[
            DECODE_TOKENS_PER_S,
            DECODE_ROOFLINE_FRAC,
            PREFILL_TOKENS_PER_S,
            TTFT_MS,
            DECODE_MS_P50,
            DECODE_MS_P99,
            PEAK_RSS_BYTES,
            COV,
        ],
        Workload::Eval => &[PERPLEXITY, KL_MEAN, KL_P99, TOP1_AGREE, EVAL_S],
        Workload::Serve => &[
            OUTPUT_TOKENS_PER_S,
            GOODPUT_REQUESTS_PER_S,
            SLO_ATTAINMENT,
            TTFT_MS_P99,
            ITL_MS_P50,
            TPOT_MS_P50,
            E2E_MS_P99,
            REQUESTS_FAILED,
        ],
    }
}

/// Metrics every workload's trials may carry: the telemetry summary
/// (present when the device exposes the sensor).
const TELEMETRY: &[&str] = &[
    TELEMETRY_SAMPLES,
    ENERGY_J,
    ENERGY_J_NET,
    JOULES_PER_TOKEN,
    JOULES_PER_OP,
    JOULES_PER_WEIGHT,
    IDLE_POWER_W,
    POWER_W_MEAN,
    POWER_W_MAX,
    TEMP_C_MAX,
    THROTTLED_FRAC,
    CPU_UTIL_PCT_MEAN,
    CPU_MHZ_MEAN,
    CPU_MHZ_MIN,
    SM_CLOCK_MHZ_MEAN,
    SM_CLOCK_MHZ_MIN,
    GPU_UTIL_PCT_MEAN,
    RSS_BYTES_MAX,
    DEVICE_MEM_USED_BYTES_MAX,
];

/// Every metric a workload's trials report (beyond its headline), as in
/// docs/sweep-spec.md.
fn workload_metrics(workload: Workload) -> &'static [&'static str] {
    match workload {
        Workload::Kernel => &[
            ROOFLINE_BW_GB_PER_S,
            ROOFLINE_PEAK_GFLOP_PER_S,
            LATENCY_MS_MEAN,
            WARMUP_ITERATIONS,
            MEASURE_MS,
        ],
        Workload::Quantize => &[PARAMETERS, QUANTIZE_GB_PER_S, FALLBACK_TENSORS, FILE_BYTES],
        Workload::Generate => &[LOAD_S, WEIGHT_BYTES, ITERATIONS],
        Workload::Eval => &[
            PERPLEXITY_SE,
            LN_PPL_RATIO,
            LN_PPL_RATIO_SE,
            KL_MEAN_SE,
            TOP1_AGREE_SE,
            NLL_MEAN,
            SCORED_TOKENS,
            REFERENCE_BYTES,
            LOAD_S,
            EVAL_TOKENS_PER_S,
        ],
        Workload::Serve => &[
            TTFT_MS_P50,
            TTFT_MS_P90,
            ITL_MS_P90,
            ITL_MS_P99,
            E2E_MS_P50,
            REQUEST_THROUGHPUT_PER_S,
            TOTAL_TOKENS_PER_S,
            USER_TOKENS_PER_S,
            REQUESTS_OK,
            BATCH_SIZE_MEAN,
            LOAD_S,
            PEAK_RSS_BYTES,
        ],
    }
}

/// The names [`reported`] accepts for a workload, headline first.
pub fn reported_list(workload: Workload) -> Vec<&'static str> {
    headline(workload)
        .iter()
        .chain(workload_metrics(workload))
        .chain(TELEMETRY)
        .copied()
        .collect()
}

/// Whether trials of the workload report a metric of this name (a search
/// objective or constraint must name one).
pub fn reported(workload: Workload, name: &str) -> bool {
    reported_list(workload).contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_metric_once_in_the_house_style() {
        for (i, a) in METRICS.iter().enumerate() {
            assert!(
                METRICS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
            assert!(
                a.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                a.name
            );
            assert!(a.description.ends_with('.'), "{}", a.name);
        }
        // The table and the per-workload lists cannot drift: every metric
        // of the table is reported by some workload.
        for m in METRICS {
            assert!(
                Workload::ALL.iter().any(|&w| reported(w, m.name)),
                "{} is in the table but no workload reports it",
                m.name
            );
        }
        for w in Workload::ALL {
            for name in reported_list(w) {
                assert!(metric(name).is_some(), "{} reports {name}", w.name());
            }
            assert!(metric(w.primary_metric()).is_some(), "{}", w.name());
        }
    }

    #[test]
    fn the_table_keeps_the_directions_and_units_names_suggest() {
        // The one metric whose direction the table corrects: a roofline
        // fraction is better higher, as `roofline_frac` always was.
        let corrected = [
            DECODE_ROOFLINE_FRAC,
            SLO_ATTAINMENT,
            REQUESTS_OK,
            BATCH_SIZE_MEAN,
        ];
        for m in METRICS {
            if !corrected.contains(&m.name) {
                assert_eq!(
                    higher_is_better(m.name),
                    higher_by_name(m.name),
                    "{}",
                    m.name
                );
            }
            // Where the name suggests a unit, the table agrees; the table
            // adds units names do not spell (J, W, °C, MHz, %).
            let by_name = unit_by_name(m.name);
            assert!(
                by_name.is_empty() || by_name == m.unit,
                "{}: {}",
                m.name,
                m.unit
            );
        }
        assert!(higher_is_better(DECODE_ROOFLINE_FRAC));
        // Unknown names: judged by the name, as before.
        assert!(higher_is_better("future_tokens_per_s"));
        assert!(!higher_is_better("future_ms"));
        assert_eq!(unit("future_ms"), "ms");
        assert_eq!(unit(ENERGY_J), "J");
    }
}
