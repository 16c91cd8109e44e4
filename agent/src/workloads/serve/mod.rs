//! The `serve` workload: one load generator driving an engine (the agent's
//! candle engine with continuous batching, a `llama-server` it starts, or
//! any OpenAI-compatible server) and timing every token of every request.
//!
//! What is decided (the requests, the metrics, goodput) is in
//! `chimera_domain::serve`; this module sends, times and counts.

pub mod http;

use super::batcher::{Batcher, Event, Request};
use super::model::{self, threads_of, Loaded};
use super::{Context, Output};
use chimera_domain::metrics;
use chimera_domain::serve::{self, Engine, Load, Planned, RequestRecord, ServeTrial};
use chimera_domain::telemetry::Phase;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Engine binaries this agent was given (`--engine llama-server=PATH`).
#[derive(Clone, Debug, Default)]
pub struct Engines(pub BTreeMap<Engine, PathBuf>);

impl Engines {
    /// Reads `NAME=PATH` flags: a known engine that the agent starts, and a
    /// file that exists.
    pub fn parse(flags: &[String]) -> Result<Engines, String> {
        let mut out = BTreeMap::new();
        for f in flags {
            let (name, path) = f
                .split_once('=')
                .ok_or_else(|| format!("--engine `{f}` is not NAME=PATH"))?;
            let engine: Engine = name.parse()?;
            if engine != Engine::LlamaServer {
                return Err(format!(
                    "--engine `{name}`: only llama-server is started by the agent \
                     (candle is built in; openai is any server, given by `endpoint`)"
                ));
            }
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!("--engine {name}={}: no such file", path.display()));
            }
            if out.insert(engine, path).is_some() {
                return Err(format!("--engine `{name}` is given twice"));
            }
        }
        Ok(Engines(out))
    }

    /// The capabilities these engines add to a device that can serve.
    pub fn capabilities(&self) -> Vec<String> {
        self.0.keys().map(|e| e.capability()).collect()
    }
}

/// Where the load goes.
enum Target {
    Candle(Batcher),
    Http(http::Http),
}

/// Shipped-text tokens prompts are cut from, at per-request offsets so
/// that no two requests share a prefix.
struct Prompts {
    tokens: Vec<u32>,
    spread: usize,
}

impl Prompts {
    fn new(tok: &tokenizers::Tokenizer, longest: usize) -> Result<Prompts, String> {
        let spread = 4096;
        Ok(Prompts {
            tokens: model::text_tokens(tok, longest + spread)?,
            spread,
        })
    }

    fn cut(&self, id: u32, n: u32) -> &[u32] {
        let from = (id as usize).wrapping_mul(389) % self.spread;
        &self.tokens[from..from + n as usize]
    }
}

/// Runs a `serve` trial.
pub fn serve(t: &ServeTrial, ctx: &Context) -> Result<Output, String> {
    let threads = threads_of(t.threads);
    let plan = serve::schedule(t);
    let longest = plan
        .iter()
        .map(|p| p.input_tokens)
        .chain([t.input_tokens.max()])
        .max()
        .unwrap_or(1);
    let mut detail = serde_json::json!({
        "engine": t.engine.name(),
        "load": t.load.to_string(),
        "max_batch": t.max_batch,
        "prompt": "token ids cut from the shipped evaluation text at a different offset per request",
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("load generator runtime: {e}"))?;
    let mut out = BTreeMap::new();
    let mut _server = None;
    let requantized = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let tokenizer: tokenizers::Tokenizer;
    let (target, engine_threads) = match t.engine {
        Engine::Candle => {
            let pool = super::kernel::pool(threads)?;
            let device = super::kernel::candle_device(ctx.device_id)?;
            model::reset_peak_rss();
            let loaded: Arc<Loaded> = model::load(ctx, &t.model, t.format, &device, &pool)?;
            tokenizer = loaded.tokenizer.clone();
            let ctx_len = loaded.llama.config.context_length as u32;
            if longest + t.output_tokens.max() > ctx_len {
                return Err(format!(
                    "input_tokens + output_tokens can reach {}, above the model's context length {ctx_len}",
                    longest + t.output_tokens.max()
                ));
            }
            out.insert(metrics::LOAD_S.to_owned(), loaded.load_s);
            detail["weights"] = loaded.stored.clone().into();
            let b = Batcher::start(loaded.clone(), device, pool, t.max_batch as usize)?;
            (Target::Candle(b), threads)
        }
        Engine::LlamaServer => {
            let bin = ctx.engines.0.get(&Engine::LlamaServer).ok_or(
                "this agent was not given llama-server (start it with --engine llama-server=PATH)",
            )?;
            let source = ctx.model_dirs.resolve(&t.model)?;
            let mut weights = crate::models::load(&source)?;
            tokenizer = weights.tokenizer.clone();
            let started = Instant::now();
            let path = match t.format {
                None => source,
                Some(f) => {
                    // The weights candle would run, as a file the server loads.
                    let pool = super::kernel::pool(threads)?;
                    crate::models::quant::quantize(
                        &mut weights,
                        crate::models::ggml_type(f),
                        &pool,
                        false,
                    )?;
                    let out = requantized.path().join(format!("model.{}.gguf", f.name()));
                    weights.write_gguf(&out)?;
                    detail["weights"] = weights.stored.clone().into();
                    out
                }
            };
            drop(weights);
            let slot_ctx = longest + t.output_tokens.max() + 16;
            let mut server =
                http::LlamaServer::start(bin, &path, t.max_batch, slot_ctx, threads as u32)?;
            rt.block_on(server.ready())?;
            out.insert(metrics::LOAD_S.to_owned(), started.elapsed().as_secs_f64());
            detail["engine_version"] = server.version.clone().into();
            detail["engine_pid"] = server.pid().into();
            let client = http::Http::new(&server.base, "model", true)?;
            _server = Some(server);
            (Target::Http(client), threads)
        }
        Engine::Openai => {
            let base = t
                .endpoint
                .as_deref()
                .ok_or("engine `openai` needs `endpoint`")?;
            tokenizer = crate::models::load(&ctx.model_dirs.resolve(&t.model)?)?.tokenizer;
            detail["endpoint"] = base.into();
            (
                Target::Http(http::Http::new(base, t.model.as_str(), false)?),
                threads,
            )
        }
    };
    let prompts = Prompts::new(&tokenizer, longest as usize)?;
    let target = Arc::new(target);
    let timeout = Duration::from_secs_f64(t.timeout_s);
    // Warm-up: one request at a time, not recorded.
    for i in 0..t.warmup_requests {
        let p = plan.get(i as usize).copied().unwrap_or(Planned {
            at_s: None,
            input_tokens: t.input_tokens.max(),
            output_tokens: t.output_tokens.max(),
        });
        let r = rt.block_on(send(
            &target,
            prompts.cut(u32::MAX - i, p.input_tokens),
            p.output_tokens,
            timeout,
        ));
        if let Some(e) = r.error {
            return Err(format!("warm-up request failed: {e}"));
        }
    }
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err("cancelled".into());
    }
    ctx.settings.phases.mark(Phase::Measure);
    let run = rt.block_on(run_load(target.clone(), &plan, &prompts, t, ctx));
    ctx.settings.phases.mark(Phase::Cooldown);
    let (records, window_s) = run?;
    if let Target::Candle(b) = &*target {
        let s = b.stats();
        if s.steps > 0 {
            out.insert(metrics::BATCH_SIZE_MEAN.to_owned(), s.mean_batch());
        }
    }
    if let Ok(Target::Candle(b)) = Arc::try_unwrap(target) {
        b.stop();
    }
    drop(_server);
    finish(t, records, window_s, out, detail, engine_threads)
}

/// The metrics, detail and energy work of a finished load.
fn finish(
    t: &ServeTrial,
    mut records: Vec<Timed>,
    window_s: f64,
    mut out: BTreeMap<String, f64>,
    mut detail: serde_json::Value,
    threads: usize,
) -> Result<Output, String> {
    records.sort_by_key(|r| r.record.id);
    let itls: Vec<f64> = records
        .iter()
        .flat_map(|r| r.itls.iter().copied())
        .collect();
    let mut kept = 0usize;
    let records: Vec<RequestRecord> = records
        .into_iter()
        .map(|mut r| {
            kept += r.itls.len();
            if kept <= serve::MAX_KEPT_ITLS {
                r.record.itl_ms = r.itls.iter().map(|x| (x * 1e3).round() / 1e3).collect();
            }
            r.record
        })
        .collect();
    out.extend(serve::summarize(&records, &itls, window_s, t.slo.as_ref()));
    if let Some(tpot) = out.get(metrics::TPOT_MS_P50).copied() {
        if tpot > 0.0 {
            out.insert(metrics::USER_TOKENS_PER_S.to_owned(), 1e3 / tpot);
        }
    }
    if let Some(rss) = model::peak_rss_bytes() {
        if t.engine == Engine::Candle {
            out.insert(metrics::PEAK_RSS_BYTES.to_owned(), rss);
        }
    }
    let output_tokens: u64 = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.output_tokens as u64)
        .sum();
    if let Some(slo) = &t.slo {
        detail["slo"] = slo.label().into();
    }
    detail["window_s"] = window_s.into();
    let shown = records.len().min(serve::MAX_KEPT_REQUESTS);
    detail["requests"] = serde_json::to_value(&records[..shown]).map_err(|e| e.to_string())?;
    if shown < records.len() {
        detail["requests_kept"] = shown.into();
    }
    if kept > serve::MAX_KEPT_ITLS {
        detail["itl_ms_kept"] = false.into();
    }
    Ok(Output {
        metrics: out,
        threads: threads as u32,
        detail: Some(detail),
        artifact: Vec::new(),
        measure_s: Some(window_s),
        work: Some((output_tokens as f64, metrics::JOULES_PER_TOKEN)),
    })
}

/// One request's record and every inter-token gap it saw (ms).
struct Timed {
    record: RequestRecord,
    itls: Vec<f64>,
}

/// What [`send`] measured.
struct Sent {
    start: Instant,
    tokens: Vec<Instant>,
    /// The engine's own count, where it gives one.
    counted: Option<u32>,
    end: Instant,
    error: Option<String>,
}

/// Sends one request and times its tokens.
async fn send(target: &Target, prompt: &[u32], max_tokens: u32, timeout: Duration) -> Sent {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tokens = Vec::with_capacity(max_tokens as usize);
    let (counted, error) = match target {
        Target::Candle(b) => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let req = Request {
                prompt: prompt.to_vec(),
                max_tokens,
                events: tx,
            };
            let mut error = b.submit(req).err();
            while error.is_none() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Err(_) => error = Some(format!("timed out after {} s", timeout.as_secs_f64())),
                    Ok(None) => error = Some("the engine dropped the request".into()),
                    Ok(Some(Event::Token(_))) => tokens.push(Instant::now()),
                    Ok(Some(Event::Done)) => break,
                    Ok(Some(Event::Error(e))) => error = Some(e),
                }
            }
            (None, error)
        }
        Target::Http(h) => match h.complete(prompt, max_tokens, deadline, &mut tokens).await {
            Ok(n) => (n, None),
            Err(e) => (None, Some(e)),
        },
    };
    Sent {
        start,
        tokens,
        counted,
        end: Instant::now(),
        error,
    }
}

/// The measured load: closed loop (users) or open loop (arrivals), until
/// the schedule is sent or `duration_s` has passed; every request sent is
/// recorded, failed or not. Returns the records and the window, seconds.
async fn run_load(
    target: Arc<Target>,
    plan: &[Planned],
    prompts: &Prompts,
    t: &ServeTrial,
    ctx: &Context<'_>,
) -> Result<(Vec<Timed>, f64), String> {
    let start = Instant::now();
    let stop_at = t.duration_s.map(|d| start + Duration::from_secs_f64(d));
    let timeout = Duration::from_secs_f64(t.timeout_s);
    let past = |now: Instant| stop_at.is_some_and(|s| now >= s);
    let record = |id: u32, p: Planned, s: Sent| -> Timed {
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
        let received = s.tokens.len() as u32;
        let output_tokens = s.counted.unwrap_or(received);
        let mut error = s.error;
        if error.is_none() && output_tokens != p.output_tokens {
            error = Some(format!(
                "asked for {} tokens, received {output_tokens}",
                p.output_tokens
            ));
        }
        let itls: Vec<f64> = s.tokens.windows(2).map(|w| ms(w[0], w[1])).collect();
        Timed {
            record: RequestRecord {
                id,
                start_ms: ms(start, s.start),
                ttft_ms: s.tokens.first().map(|&f| ms(s.start, f)),
                e2e_ms: Some(ms(s.start, s.end)),
                input_tokens: p.input_tokens,
                requested_tokens: p.output_tokens,
                output_tokens,
                itl_ms: Vec::new(),
                error,
            },
            itls,
        }
    };
    let mut records = Vec::with_capacity(plan.len());
    match t.load {
        Load::Concurrency(users) => {
            let next = AtomicUsize::new(0);
            let user = || async {
                let mut mine = Vec::new();
                loop {
                    if ctx.cancel.load(Ordering::Relaxed) || past(Instant::now()) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = plan.get(i).copied() else { break };
                    let s = send(
                        &target,
                        prompts.cut(i as u32, p.input_tokens),
                        p.output_tokens,
                        timeout,
                    )
                    .await;
                    mine.push(record(i as u32, p, s));
                }
                mine
            };
            let all = futures::future::join_all((0..users).map(|_| user())).await;
            records.extend(all.into_iter().flatten());
        }
        Load::Rate(_) => {
            use futures::stream::{FuturesUnordered, StreamExt};
            let mut inflight = FuturesUnordered::new();
            let mut i = 0usize;
            loop {
                let next = plan
                    .get(i)
                    .map(|p| start + Duration::from_secs_f64(p.at_s.unwrap_or(0.0)));
                tokio::select! {
                    Some(r) = inflight.next(), if !inflight.is_empty() => records.push(r),
                    _ = tokio::time::sleep_until(next.unwrap_or(start).into()), if next.is_some() => {
                        if ctx.cancel.load(Ordering::Relaxed) || past(Instant::now()) {
                            i = plan.len();
                            continue;
                        }
                        let p = plan[i];
                        let id = i as u32;
                        let (target, record) = (&target, &record);
                        inflight.push(async move {
                            let s = send(target, prompts.cut(id, p.input_tokens), p.output_tokens, timeout).await;
                            record(id, p, s)
                        });
                        i += 1;
                    }
                    else => break,
                }
            }
        }
    }
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err("cancelled".into());
    }
    let window_s = start.elapsed().as_secs_f64();
    Ok((records, window_s))
}
