//! The `serve` workload: a load test of an inference engine under concurrency.
//!
//! Its parameters ([`ServeTrial`]), the requests a trial sends (a pure,
//! seeded [`schedule`]), what each request measured ([`RequestRecord`]) and
//! how a trial's records become its metrics ([`summarize`]): the agent runs
//! the load, everything it decides is here and unit-tested.
//!
//! Definitions follow `vllm bench serve` and AIPerf: TTFT is from sending a
//! request to its first output token; ITL the gaps between consecutive
//! tokens of one request; TPOT a request's `(e2e - ttft) / (tokens - 1)`;
//! goodput the requests per second that met every SLO bound.

use crate::metrics;
use crate::models::{ModelPath, Reader, WeightFormat, MAX_TOKENS};
use crate::names::{hint, pick};
use crate::params::{ParamValue, Params};
use crate::stats::quantile;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Most requests one trial sends (warm-up included).
pub const MAX_REQUESTS: u32 = 100_000;
/// Most simultaneous users of a closed-loop load.
pub const MAX_CONCURRENCY: u32 = 4096;
/// Longest load a trial runs, seconds.
pub const MAX_DURATION_S: f64 = 3600.0;
/// Inter-token gaps a trial keeps in its request records, over all its
/// requests; past it the records keep TTFT and E2E only (`itl_ms` empty)
/// and the metrics still use every gap. With [`MAX_KEPT_REQUESTS`] it keeps
/// a trial's stored record well under the controller's 1 MiB per record.
pub const MAX_KEPT_ITLS: usize = 30_000;
/// Request records a trial keeps (the first, by id); the metrics use all.
pub const MAX_KEPT_REQUESTS: usize = 2_000;

/// The parameters of the SLO a sweep's `slo:` sets on every trial.
pub const SLO_TTFT_MS: &str = "slo_ttft_ms";
pub const SLO_ITL_MS: &str = "slo_itl_ms";
pub const SLO_E2E_MS: &str = "slo_e2e_ms";
pub const SLO_PERCENTILE: &str = "slo_percentile";

/// The engine a `serve` trial loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// The agent's own candle engine, with continuous batching.
    Candle,
    /// llama.cpp's `llama-server`, started by the agent for the trial from
    /// the binary it was given (`--engine llama-server=PATH`).
    LlamaServer,
    /// Any OpenAI-compatible server already running at `endpoint`.
    Openai,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Candle, Engine::LlamaServer, Engine::Openai];

    /// The spelling in a spec and in capabilities.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Candle => "candle",
            Engine::LlamaServer => "llama-server",
            Engine::Openai => "openai",
        }
    }

    /// The capability an agent advertises when it can run this engine.
    pub fn capability(self) -> String {
        format!("serve/{}", self.name())
    }
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        pick(s, &Engine::ALL, Engine::name).map_err(|near| {
            format!(
                "unknown engine `{s}`, expected one of: candle, llama-server, openai{}",
                hint(near)
            )
        })
    }
}

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Closed loop: this many users, each sending its next request when its
    /// last one finished.
    Concurrency(u32),
    /// Open loop: Poisson arrivals at this mean rate, requests/s;
    /// `f64::INFINITY` sends every request at once.
    Rate(f64),
}

impl Load {
    /// The load as one number, for ordering and for the capacity axis: users
    /// or requests/s.
    pub fn level(self) -> f64 {
        match self {
            Load::Concurrency(c) => c as f64,
            Load::Rate(r) => r,
        }
    }

    /// The parameter that sets it.
    pub fn param(self) -> &'static str {
        match self {
            Load::Concurrency(_) => "concurrency",
            Load::Rate(_) => "request_rate",
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Concurrency(c) => write!(f, "concurrency {c}"),
            Load::Rate(r) if r.is_infinite() => f.write_str("request_rate inf"),
            Load::Rate(r) => write!(f, "request_rate {r}/s"),
        }
    }
}

/// A token count: fixed, or drawn per request from a seeded distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenDist {
    Fixed(u32),
    /// Uniform over `min..=max`.
    Uniform {
        min: u32,
        max: u32,
    },
    /// Normal, rounded and clamped to `min..=max`.
    Normal {
        mean: f64,
        sd: f64,
        min: u32,
        max: u32,
    },
}

impl TokenDist {
    /// The largest count it can draw.
    pub fn max(self) -> u32 {
        match self {
            TokenDist::Fixed(n) => n,
            TokenDist::Uniform { max, .. } | TokenDist::Normal { max, .. } => max,
        }
    }

    fn sample(self, rng: &mut ChaCha8Rng) -> u32 {
        match self {
            TokenDist::Fixed(n) => n,
            TokenDist::Uniform { min, max } => rng.random_range(min..=max),
            TokenDist::Normal { mean, sd, min, max } => {
                let x = Normal::new(mean, sd).map_or(mean, |d| d.sample(rng));
                x.round().clamp(min as f64, max as f64) as u32
            }
        }
    }

    fn from_param(name: &str, v: &ParamValue) -> Result<TokenDist, String> {
        let bad = |why: &str| {
            format!(
                "parameter `{name}` = `{v}` {why}; give a count (`128`), `uniform(MIN,MAX)` \
                 or `normal(MEAN,SD,MIN,MAX)`"
            )
        };
        let count = |x: f64| -> Result<u32, String> {
            if x.fract() == 0.0 && (1.0..=MAX_TOKENS as f64).contains(&x) {
                Ok(x as u32)
            } else {
                Err(bad(&format!(
                    "has {x}, not a whole number from 1 to {MAX_TOKENS}"
                )))
            }
        };
        let text = match v {
            ParamValue::Int(n) => return count(*n as f64).map(TokenDist::Fixed),
            ParamValue::Text(s) => s.trim(),
            _ => return Err(bad("is not a token count")),
        };
        if let Ok(n) = text.parse::<u32>() {
            return count(n as f64).map(TokenDist::Fixed);
        }
        let (kind, args) = text
            .strip_suffix(')')
            .and_then(|t| t.split_once('('))
            .ok_or_else(|| bad("is not a token count or a distribution"))?;
        let args: Vec<f64> = args
            .split(',')
            .map(|a| a.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad("has an argument that is not a number"))?;
        match (kind.trim(), args.as_slice()) {
            ("uniform", [lo, hi]) => {
                let (min, max) = (count(*lo)?, count(*hi)?);
                if min > max {
                    return Err(bad("has MIN above MAX"));
                }
                Ok(TokenDist::Uniform { min, max })
            }
            ("normal", [mean, sd, lo, hi]) => {
                let (min, max) = (count(*lo)?, count(*hi)?);
                if min > max || !(sd.is_finite() && *sd >= 0.0) || !mean.is_finite() {
                    return Err(bad("needs SD >= 0 and MIN <= MAX"));
                }
                Ok(TokenDist::Normal {
                    mean: *mean,
                    sd: *sd,
                    min,
                    max,
                })
            }
            _ => Err(bad("is not a known distribution")),
        }
    }
}

/// Latency bounds a request must meet to count toward goodput, and the
/// share of requests that must meet them for the load to be served.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Time to first token, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Inter-token latency, ms, judged on a request's mean gap (its TPOT),
    /// as vLLM's goodput does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_ms: Option<f64>,
    /// End-to-end latency of a request, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
    /// Percent of requests that must meet the bounds (default 90): a load
    /// is within the SLO when its `slo_attainment` reaches it.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
}

fn default_percentile() -> f64 {
    90.0
}

impl Slo {
    /// Checks the bounds: each positive and finite, the percentile in (0, 100].
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("ttft_ms", self.ttft_ms),
            ("itl_ms", self.itl_ms),
            ("e2e_ms", self.e2e_ms),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("slo.{name} = {v} must be a positive number of ms"));
                }
            }
        }
        if self.ttft_ms.is_none() && self.itl_ms.is_none() && self.e2e_ms.is_none() {
            return Err("slo needs at least one of ttft_ms, itl_ms, e2e_ms".into());
        }
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            return Err(format!(
                "slo.percentile = {} must be above 0 and at most 100",
                self.percentile
            ));
        }
        Ok(())
    }

    /// The SLO as trial parameters (what expansion adds to each configuration).
    pub fn params(&self) -> Params {
        let mut p = Params::new();
        for (k, v) in [
            (SLO_TTFT_MS, self.ttft_ms),
            (SLO_ITL_MS, self.itl_ms),
            (SLO_E2E_MS, self.e2e_ms),
            (SLO_PERCENTILE, Some(self.percentile)),
        ] {
            if let Some(v) = v {
                p.insert(k.to_owned(), ParamValue::Real(v));
            }
        }
        p
    }

    /// Whether one request met every bound (a failed request never does).
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if r.error.is_some() {
            return false;
        }
        let within = |bound: Option<f64>, v: Option<f64>| match (bound, v) {
            (None, _) => true,
            (Some(b), Some(v)) => v <= b,
            (Some(_), None) => false,
        };
        within(self.ttft_ms, r.ttft_ms)
            && within(self.itl_ms, r.tpot_ms().or(Some(0.0)))
            && within(self.e2e_ms, r.e2e_ms)
    }

    /// One line for tables: `ttft<=500ms itl<=50ms @90%`.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for (n, v) in [
            ("ttft", self.ttft_ms),
            ("itl", self.itl_ms),
            ("e2e", self.e2e_ms),
        ] {
            if let Some(v) = v {
                parts.push(format!("{n}<={v}ms"));
            }
        }
        parts.push(format!("@{}%", self.percentile));
        parts.join(" ")
    }

    /// The SLO a configuration's parameters carry, if any.
    pub fn from_params(p: &Params) -> Result<Option<Slo>, String> {
        let real = |k: &str| -> Result<Option<f64>, String> {
            match p.get(k) {
                None => Ok(None),
                Some(ParamValue::Real(v)) => Ok(Some(*v)),
                Some(ParamValue::Int(v)) => Ok(Some(*v as f64)),
                Some(other) => Err(format!("parameter `{k}` = `{other}` must be a number")),
            }
        };
        let (ttft_ms, itl_ms, e2e_ms) = (real(SLO_TTFT_MS)?, real(SLO_ITL_MS)?, real(SLO_E2E_MS)?);
        let percentile = real(SLO_PERCENTILE)?;
        if ttft_ms.is_none() && itl_ms.is_none() && e2e_ms.is_none() && percentile.is_none() {
            return Ok(None);
        }
        let slo = Slo {
            ttft_ms,
            itl_ms,
            e2e_ms,
            percentile: percentile.unwrap_or_else(default_percentile),
        };
        slo.check()?;
        Ok(Some(slo))
    }
}

/// A `serve` trial.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeTrial {
    /// The GGUF model the engine serves; also the tokenizer prompts are cut with.
    pub model: ModelPath,
    /// Re-quantize at load: candle in memory; for llama-server the agent
    /// writes the re-quantized weights as a GGUF file the server loads, so
    /// both engines run the same weights.
    pub format: Option<WeightFormat>,
    pub engine: Engine,
    /// Base URL of an `openai` engine (`http://127.0.0.1:8080`).
    pub endpoint: Option<String>,
    pub load: Load,
    /// Measured requests to send; the load stops at this many or at
    /// `duration_s`, whichever comes first.
    pub requests: u32,
    pub duration_s: Option<f64>,
    pub input_tokens: TokenDist,
    pub output_tokens: TokenDist,
    /// Requests sent one at a time before the measured load, not counted.
    pub warmup_requests: u32,
    /// Sequences the engine decodes together (candle's running batch,
    /// llama-server's `-np` slots); default: the concurrency, or 16.
    pub max_batch: u32,
    pub threads: Option<u32>,
    /// Seed of arrivals and token counts.
    pub seed: u64,
    /// A request with no answer after this long fails, seconds.
    pub timeout_s: f64,
    pub slo: Option<Slo>,
}

impl ServeTrial {
    /// Parameters the workload takes.
    pub const PARAMS: &'static [&'static str] = &[
        "model",
        "format",
        "engine",
        "endpoint",
        "concurrency",
        "request_rate",
        "requests",
        "duration_s",
        "input_tokens",
        "output_tokens",
        "warmup_requests",
        "max_batch",
        "threads",
        "seed",
        "timeout_s",
        SLO_TTFT_MS,
        SLO_ITL_MS,
        SLO_E2E_MS,
        SLO_PERCENTILE,
    ];

    /// The parameters a spec may set (the SLO comes from the spec's `slo:`).
    pub fn spec_params() -> &'static [&'static str] {
        &Self::PARAMS[..Self::PARAMS.len() - 4]
    }

    /// Reads and checks a configuration.
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let r = Reader {
            params: p,
            workload: "serve",
        };
        r.check_known(Self::PARAMS)?;
        let engine: Engine = r.parsed("engine")?.unwrap_or(Engine::Candle);
        let real = |k: &str| -> Result<Option<f64>, String> {
            match p.get(k) {
                None => Ok(None),
                Some(ParamValue::Real(v)) if v.is_finite() => Ok(Some(*v)),
                Some(ParamValue::Int(v)) => Ok(Some(*v as f64)),
                Some(other) => Err(format!("parameter `{k}` = `{other}` must be a number")),
            }
        };
        let load = match (p.get("concurrency"), p.get("request_rate")) {
            (Some(_), Some(_)) => {
                return Err(
                    "give `concurrency` (closed loop) or `request_rate` (open loop), not both"
                        .into(),
                )
            }
            (_, Some(ParamValue::Text(s))) if s.eq_ignore_ascii_case("inf") => {
                Load::Rate(f64::INFINITY)
            }
            (_, Some(_)) => match real("request_rate")? {
                Some(v) if v > 0.0 && v <= 1e6 => Load::Rate(v),
                v => {
                    return Err(format!(
                        "parameter `request_rate` = `{}` must be above 0 and at most 1000000 requests/s, or `inf`",
                        v.map_or_else(|| "?".to_owned(), |v| v.to_string())
                    ))
                }
            },
            _ => Load::Concurrency(r.int("concurrency", 1, MAX_CONCURRENCY)?.unwrap_or(1)),
        };
        let requests = r.int("requests", 1, MAX_REQUESTS)?.unwrap_or(32);
        let duration_s = real("duration_s")?;
        if let Some(d) = duration_s {
            if !(d > 0.0 && d <= MAX_DURATION_S) {
                return Err(format!(
                    "parameter `duration_s` = `{d}` must be above 0 and at most {MAX_DURATION_S}"
                ));
            }
        }
        let dist = |k: &str, default: u32| -> Result<TokenDist, String> {
            p.get(k).map_or(Ok(TokenDist::Fixed(default)), |v| {
                TokenDist::from_param(k, v)
            })
        };
        let input_tokens = dist("input_tokens", 128)?;
        let output_tokens = dist("output_tokens", 64)?;
        if input_tokens.max() + output_tokens.max() > MAX_TOKENS {
            return Err(format!(
                "input_tokens + output_tokens can reach {}, above {MAX_TOKENS}",
                input_tokens.max() + output_tokens.max()
            ));
        }
        let format: Option<WeightFormat> = r.parsed("format")?;
        if format.is_some() && engine == Engine::Openai {
            return Err(
                "parameter `format` re-quantizes for the engines the agent loads (candle, \
                 llama-server); an `openai` endpoint serves what it serves"
                    .into(),
            );
        }
        let endpoint = r.text("endpoint")?.map(str::to_owned);
        match (&endpoint, engine) {
            (None, Engine::Openai) => {
                return Err("engine `openai` needs `endpoint`, the server's base URL \
                     (`http://127.0.0.1:8080`)"
                    .into())
            }
            (Some(e), Engine::Openai) => {
                if !(e.starts_with("http://") && e.len() <= 512) {
                    return Err(format!(
                        "parameter `endpoint` = `{e}` must be an http:// URL of at most 512 characters"
                    ));
                }
            }
            (Some(_), other) => {
                return Err(format!(
                "parameter `endpoint` is for engine `openai`; engine `{}` is started by the agent",
                other.name()
            ))
            }
            (None, _) => {}
        }
        let default_batch = match load {
            Load::Concurrency(c) => c.min(256),
            Load::Rate(_) => 16,
        };
        let timeout_s = real("timeout_s")?.unwrap_or(300.0);
        if !(timeout_s > 0.0 && timeout_s <= MAX_DURATION_S) {
            return Err(format!(
                "parameter `timeout_s` = `{timeout_s}` must be above 0 and at most {MAX_DURATION_S}"
            ));
        }
        Ok(ServeTrial {
            model: r.model()?,
            format,
            engine,
            endpoint,
            load,
            requests,
            duration_s,
            input_tokens,
            output_tokens,
            warmup_requests: r.int("warmup_requests", 0, 1000)?.unwrap_or(1),
            max_batch: r.int("max_batch", 1, 256)?.unwrap_or(default_batch),
            threads: r.threads()?,
            seed: r.int("seed", 0, u32::MAX)?.unwrap_or(0) as u64,
            timeout_s,
            slo: Slo::from_params(p)?,
        })
    }
}

/// One request a trial sends, decided before the load starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Planned {
    /// Open loop: when it is sent, seconds after the load starts; closed
    /// loop: `None` (sent when a user is free).
    pub at_s: Option<f64>,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// The measured requests of a trial, in sending order: token counts drawn
/// and (open loop) Poisson arrival times, all from the trial's seed, so two
/// engines of one sweep get the same requests.
pub fn schedule(t: &ServeTrial) -> Vec<Planned> {
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
    let gaps = match t.load {
        Load::Rate(r) if r.is_finite() => Exp::new(r).ok(),
        _ => None,
    };
    let mut clock = 0.0;
    (0..t.requests)
        .map(|_| {
            let at_s = match t.load {
                Load::Concurrency(_) => None,
                Load::Rate(_) => {
                    let at = clock;
                    if let Some(g) = &gaps {
                        clock += g.sample(&mut rng);
                    }
                    Some(at)
                }
            };
            Planned {
                at_s,
                input_tokens: t.input_tokens.sample(&mut rng),
                output_tokens: t.output_tokens.sample(&mut rng),
            }
        })
        .collect()
}

/// What one request measured. Times are ms; `start_ms` from the start of
/// the measured load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Its index in the trial's schedule.
    pub id: u32,
    /// When it was sent.
    pub start_ms: f64,
    /// Time to its first output token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Time to its last token (or to its failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
    pub input_tokens: u32,
    /// Output tokens it asked for.
    pub requested_tokens: u32,
    /// Output tokens it received.
    pub output_tokens: u32,
    /// Gaps between its consecutive tokens (empty past [`MAX_KEPT_ITLS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub itl_ms: Vec<f64>,
    /// Why it failed; a request with an error is counted as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RequestRecord {
    /// Mean time per output token after the first, ms.
    pub fn tpot_ms(&self) -> Option<f64> {
        match (self.ttft_ms, self.e2e_ms) {
            (Some(t), Some(e)) if self.output_tokens > 1 => {
                Some((e - t) / (self.output_tokens - 1) as f64)
            }
            _ => None,
        }
    }
}

/// A trial's metrics from its request records, every inter-token gap (kept
/// or not) and the length of its measured window.
pub fn summarize(
    records: &[RequestRecord],
    itls: &[f64],
    window_s: f64,
    slo: Option<&Slo>,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.error.is_none()).collect();
    let sorted = |mut v: Vec<f64>| {
        v.retain(|x| x.is_finite());
        v.sort_by(f64::total_cmp);
        v
    };
    let ttft = sorted(ok.iter().filter_map(|r| r.ttft_ms).collect());
    let e2e = sorted(ok.iter().filter_map(|r| r.e2e_ms).collect());
    let tpot = sorted(ok.iter().filter_map(|r| r.tpot_ms()).collect());
    let itl = sorted(itls.to_vec());
    let mut put = |name: &str, v: f64| {
        if v.is_finite() {
            m.insert(name.to_owned(), v);
        }
    };
    for (v, names) in [
        (
            &ttft,
            [
                metrics::TTFT_MS_P50,
                metrics::TTFT_MS_P90,
                metrics::TTFT_MS_P99,
            ],
        ),
        (
            &itl,
            [
                metrics::ITL_MS_P50,
                metrics::ITL_MS_P90,
                metrics::ITL_MS_P99,
            ],
        ),
    ] {
        if !v.is_empty() {
            for (q, n) in [0.5, 0.9, 0.99].into_iter().zip(names) {
                put(n, quantile(v, q));
            }
        }
    }
    if !tpot.is_empty() {
        put(metrics::TPOT_MS_P50, quantile(&tpot, 0.5));
    }
    if !e2e.is_empty() {
        put(metrics::E2E_MS_P50, quantile(&e2e, 0.5));
        put(metrics::E2E_MS_P99, quantile(&e2e, 0.99));
    }
    let out_tokens: u64 = ok.iter().map(|r| r.output_tokens as u64).sum();
    let in_tokens: u64 = ok.iter().map(|r| r.input_tokens as u64).sum();
    let failed = records.len() - ok.len();
    put(metrics::REQUESTS_OK, ok.len() as f64);
    put(metrics::REQUESTS_FAILED, failed as f64);
    if window_s > 0.0 {
        put(
            metrics::REQUEST_THROUGHPUT_PER_S,
            ok.len() as f64 / window_s,
        );
        put(metrics::OUTPUT_TOKENS_PER_S, out_tokens as f64 / window_s);
        put(
            metrics::TOTAL_TOKENS_PER_S,
            (out_tokens + in_tokens) as f64 / window_s,
        );
    }
    if let Some(slo) = slo {
        let good = records.iter().filter(|r| slo.met_by(r)).count();
        if !records.is_empty() {
            put(metrics::SLO_ATTAINMENT, good as f64 / records.len() as f64);
        }
        if window_s > 0.0 {
            put(metrics::GOODPUT_REQUESTS_PER_S, good as f64 / window_s);
        }
    }
    m
}

/// Whether a trial's metrics show its load within the SLO.
pub fn within_slo(metrics: &BTreeMap<String, f64>, slo: &Slo) -> bool {
    metrics
        .get(metrics::SLO_ATTAINMENT)
        .is_some_and(|a| *a * 100.0 >= slo.percentile - 1e-9)
        && metrics
            .get(metrics::REQUESTS_FAILED)
            .copied()
            .unwrap_or(0.0)
            == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, ParamValue)]) -> Params {
        let mut p: Params = kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        p.entry("model".into())
            .or_insert(ParamValue::Text("m.gguf".into()));
        p
    }

    #[test]
    fn a_trial_reads_its_load_and_refuses_what_cannot_run() {
        let t = ServeTrial::from_params(&params(&[("concurrency", ParamValue::Int(4))])).unwrap();
        assert_eq!(t.load, Load::Concurrency(4));
        assert_eq!((t.engine, t.max_batch, t.requests), (Engine::Candle, 4, 32));
        let t =
            ServeTrial::from_params(&params(&[("request_rate", ParamValue::Text("inf".into()))]))
                .unwrap();
        assert!(matches!(t.load, Load::Rate(r) if r.is_infinite()));
        for (kv, needle) in [
            (
                vec![
                    ("concurrency", ParamValue::Int(2)),
                    ("request_rate", ParamValue::Real(1.0)),
                ],
                "not both",
            ),
            (
                vec![("engine", ParamValue::Text("openai".into()))],
                "needs `endpoint`",
            ),
            (
                vec![("engine", ParamValue::Text("vllm".into()))],
                "unknown engine `vllm`",
            ),
            (
                vec![
                    ("engine", ParamValue::Text("openai".into())),
                    ("endpoint", ParamValue::Text("http://127.0.0.1:1".into())),
                    ("format", ParamValue::Text("q8_0".into())),
                ],
                "an `openai` endpoint serves what it serves",
            ),
            (
                vec![("input_tokens", ParamValue::Text("uniform(9,3)".into()))],
                "MIN above MAX",
            ),
            (
                vec![("output_tokens", ParamValue::Int(0))],
                "`output_tokens` = `0`",
            ),
            (
                vec![("request_rate", ParamValue::Real(-1.0))],
                "`request_rate`",
            ),
            (
                vec![("concurrency", ParamValue::Int(0))],
                "`concurrency` = `0`",
            ),
            (vec![("slo_percentile", ParamValue::Real(150.0))], "slo"),
        ] {
            let e = ServeTrial::from_params(&params(&kv)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_spec_slo_rides_on_every_configuration_and_is_checked() {
        let spec = "name: s\nworkload: serve\nparams:\n  model: m.gguf\n  concurrency: [1, 4]\nslo: {ttft_ms: 500, itl_ms: 50}\n";
        let p = crate::spec::parse(spec).unwrap();
        assert_eq!(p.configs.len(), 2);
        for c in &p.configs {
            let t = ServeTrial::from_params(c).unwrap();
            let slo = t.slo.unwrap();
            assert_eq!(
                (slo.ttft_ms, slo.itl_ms, slo.percentile),
                (Some(500.0), Some(50.0), 90.0)
            );
        }
        for (bad, needle) in [
            ("slo: {ttft_ms: -1}\n", "slo.ttft_ms = -1"),
            ("slo: {percentile: 90}\n", "at least one of"),
            ("slo: {ttft: 5}\n", "ttft"),
        ] {
            let e = crate::spec::parse(&format!(
                "name: s\nworkload: serve\nparams: {{model: m.gguf}}\n{bad}"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{e}");
        }
        // A spec cannot set the SLO's parameters directly, nor slo on another workload.
        let e = crate::spec::parse(
            "name: s\nworkload: serve\nparams: {model: m.gguf, slo_ttft_ms: 5}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown parameter `slo_ttft_ms`"), "{e}");
        let e = crate::spec::parse(
            "name: s\nworkload: generate\nparams: {model: m.gguf}\nslo: {ttft_ms: 5}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`slo` is for workload serve"), "{e}");
    }

    #[test]
    fn the_schedule_is_seeded_and_poisson_arrivals_have_the_asked_rate() {
        let mut t = ServeTrial::from_params(&params(&[
            ("request_rate", ParamValue::Real(10.0)),
            ("requests", ParamValue::Int(2000)),
            ("input_tokens", ParamValue::Text("uniform(16,64)".into())),
            (
                "output_tokens",
                ParamValue::Text("normal(32,8,8,64)".into()),
            ),
        ]))
        .unwrap();
        let a = schedule(&t);
        assert_eq!(a, schedule(&t), "same seed, same requests");
        assert_eq!(a[0].at_s, Some(0.0));
        let last = a[a.len() - 1].at_s.unwrap();
        let rate = (a.len() - 1) as f64 / last;
        assert!((8.5..11.5).contains(&rate), "rate {rate}");
        assert!(a.iter().all(|p| (16..=64).contains(&p.input_tokens)));
        assert!(a.iter().all(|p| (8..=64).contains(&p.output_tokens)));
        let mean = a.iter().map(|p| p.output_tokens as f64).sum::<f64>() / a.len() as f64;
        assert!((30.0..34.0).contains(&mean), "mean {mean}");
        t.seed = 1;
        assert_ne!(a, schedule(&t), "another seed, other requests");
        t.load = Load::Rate(f64::INFINITY);
        assert!(schedule(&t).iter().all(|p| p.at_s == Some(0.0)));
        t.load = Load::Concurrency(2);
        assert!(schedule(&t).iter().all(|p| p.at_s.is_none()));
    }

    fn rec(ttft: f64, e2e: f64, out: u32) -> RequestRecord {
        RequestRecord {
            ttft_ms: Some(ttft),
            e2e_ms: Some(e2e),
            input_tokens: 10,
            requested_tokens: out,
            output_tokens: out,
            ..Default::default()
        }
    }

    #[test]
    fn goodput_counts_requests_within_every_bound_and_failures_count_against() {
        let slo = Slo {
            ttft_ms: Some(100.0),
            itl_ms: Some(10.0),
            e2e_ms: None,
            percentile: 75.0,
        };
        let failed = RequestRecord {
            requested_tokens: 5,
            error: Some("timed out".into()),
            ..Default::default()
        };
        let records = vec![
            rec(50.0, 140.0, 10),  // tpot 10: good
            rec(150.0, 200.0, 10), // ttft too slow
            rec(50.0, 250.0, 11),  // tpot 20: too slow
            failed,
        ];
        let m = summarize(&records, &[10.0, 10.0, 20.0], 2.0, Some(&slo));
        assert_eq!(m[metrics::REQUESTS_OK], 3.0);
        assert_eq!(m[metrics::REQUESTS_FAILED], 1.0);
        assert_eq!(m[metrics::SLO_ATTAINMENT], 0.25);
        assert_eq!(m[metrics::GOODPUT_REQUESTS_PER_S], 0.5);
        assert_eq!(m[metrics::REQUEST_THROUGHPUT_PER_S], 1.5);
        assert_eq!(m[metrics::OUTPUT_TOKENS_PER_S], 31.0 / 2.0);
        assert_eq!(m[metrics::TOTAL_TOKENS_PER_S], 61.0 / 2.0);
        assert_eq!(m[metrics::TTFT_MS_P50], 50.0);
        assert_eq!(m[metrics::ITL_MS_P50], 10.0);
        assert!(!within_slo(&m, &slo));
        let m = summarize(&records[..1], &[], 1.0, Some(&slo));
        assert!(within_slo(&m, &slo));
        assert!(!m.contains_key(metrics::ITL_MS_P50), "no gaps, no ITL");
    }
}
