//! The continuous-batching engine the `serve` workload runs requests on.
//!
//! One engine thread owns the model's running sequences. Every iteration it
//! admits waiting requests while fewer than `max_batch` run (each admitted
//! request gets a preallocated [`SeqCache`] of `prompt + max_tokens` tokens,
//! its prompt's prefill, and its first token at once), then runs ONE
//! [`Llama::decode_batch`] step over every running sequence, sends each its
//! next token and retires those that are done, as vLLM and TGI schedule at
//! token granularity: a request joins or leaves the batch between any two
//! steps. Idle, it blocks on its queue. Decoding is greedy, with no stop at
//! end-of-sequence: a request gets exactly `max_tokens` tokens.
//!
//! [`Llama::decode_batch`]: crate::models::llama::Llama::decode_batch

use super::model::Loaded;
use crate::models::llama::{argmax_rows, SeqCache};
use candle_core::Device;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc::UnboundedSender;

/// Requests that may wait for admission before [`Batcher::submit`] refuses more.
pub const QUEUE_LIMIT: usize = 4096;

/// One generation request.
pub struct Request {
    /// The prompt's token ids (at least one).
    pub prompt: Vec<u32>,
    /// Tokens to generate (at least one); exactly this many are sent.
    pub max_tokens: u32,
    /// Where the request's [`Event`]s go; dropping the receiver cancels it.
    pub events: UnboundedSender<Event>,
}

/// What the engine tells a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The next generated token (sent in order).
    Token(u32),
    /// All `max_tokens` tokens were sent.
    Done,
    /// The request failed or was refused; nothing follows.
    Error(String),
}

/// Counters of what the engine did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Decode steps run.
    pub steps: u64,
    /// Sum over decode steps of the sequences each step ran.
    pub batched: u64,
    /// Prompts prefilled (requests admitted).
    pub prefills: u64,
    /// Most sequences running at once.
    pub peak_running: u64,
}

impl BatchStats {
    /// Mean sequences per decode step (0 before the first step).
    pub fn mean_batch(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.batched as f64 / self.steps as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    steps: AtomicU64,
    batched: AtomicU64,
    prefills: AtomicU64,
    peak_running: AtomicU64,
}

/// The engine: a thread running admitted requests together, one decode step
/// at a time.
pub struct Batcher {
    queue: Option<SyncSender<Request>>,
    stopping: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

// Request handlers share one engine across threads (`Arc<Batcher>`).
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Batcher>();
};

impl Batcher {
    /// Starts the engine thread on `model` (already on `device`), running up
    /// to `max_batch` sequences at once. `pool` runs candle's CPU kernels.
    pub fn start(
        model: Arc<Loaded>,
        device: Device,
        pool: Arc<rayon::ThreadPool>,
        max_batch: usize,
    ) -> Result<Batcher, String> {
        if max_batch == 0 {
            return Err("max_batch must be at least 1, got 0".into());
        }
        if !model.llama.device().same_device(&device) {
            return Err(format!(
                "the model is on {:?}, not on the engine's device {device:?}",
                model.llama.device().location()
            ));
        }
        let (queue, waiting) = mpsc::sync_channel(QUEUE_LIMIT);
        let stopping = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let engine = Engine {
            model,
            max_batch,
            waiting,
            stopping: stopping.clone(),
            counters: counters.clone(),
            running: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("batcher".into())
            .spawn(move || pool.install(move || engine.run()))
            .map_err(|e| format!("start the batcher thread: {e}"))?;
        Ok(Batcher {
            queue: Some(queue),
            stopping,
            counters,
            thread: Some(thread),
        })
    }

    /// Queues a request; its events arrive on `r.events`. Fails when the
    /// engine has stopped or [`QUEUE_LIMIT`] requests already wait.
    pub fn submit(&self, r: Request) -> Result<(), String> {
        let queue = self.queue.as_ref().ok_or("the engine stopped")?;
        queue.try_send(r).map_err(|e| match e {
            TrySendError::Full(_) => {
                format!("the engine's queue is full ({QUEUE_LIMIT} requests wait)")
            }
            TrySendError::Disconnected(_) => "the engine stopped".to_owned(),
        })
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> BatchStats {
        let c = &self.counters;
        BatchStats {
            steps: c.steps.load(Ordering::Relaxed),
            batched: c.batched.load(Ordering::Relaxed),
            prefills: c.prefills.load(Ordering::Relaxed),
            peak_running: c.peak_running.load(Ordering::Relaxed),
        }
    }

    /// Stops the engine and waits for its thread (at most one decode step);
    /// running and waiting requests get `Event::Error("engine stopped")`.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes an idle engine: its queue disconnects.
        self.queue.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the batcher thread panicked");
            }
        }
    }
}

/// A running sequence.
struct Seq {
    events: UnboundedSender<Event>,
    cache: SeqCache,
    /// The last token generated (the next step's input).
    last: u32,
    generated: u32,
    max_tokens: u32,
}

struct Engine {
    model: Arc<Loaded>,
    max_batch: usize,
    waiting: Receiver<Request>,
    stopping: Arc<AtomicBool>,
    counters: Arc<Counters>,
    running: Vec<Seq>,
}

const STOPPED: &str = "engine stopped";

impl Engine {
    fn run(mut self) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return self.fail_all(STOPPED);
            }
            // A panic in candle fails the requests in flight, not the engine.
            let go_on = std::panic::catch_unwind(AssertUnwindSafe(|| self.iterate()));
            match go_on {
                Ok(true) => {}
                Ok(false) => return self.fail_all(STOPPED),
                Err(p) => {
                    let why = p
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| p.downcast_ref::<&str>().copied())
                        .unwrap_or("unknown panic");
                    tracing::error!(panic = why, "the batcher's step panicked");
                    for s in self.running.drain(..) {
                        let _ = s
                            .events
                            .send(Event::Error(format!("the engine failed: {why}")));
                    }
                }
            }
        }
    }

    /// Admits what fits, then runs one decode step. `false` when the queue
    /// disconnected (the engine is stopping).
    fn iterate(&mut self) -> bool {
        while self.running.len() < self.max_batch {
            let next = if self.running.is_empty() {
                // Idle: block until a request or the stop.
                self.waiting.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                self.waiting.try_recv()
            };
            match next {
                Ok(r) if self.stopping.load(Ordering::SeqCst) => {
                    let _ = r.events.send(Event::Error(STOPPED.into()));
                }
                Ok(r) => self.admit(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        let peak = &self.counters.peak_running;
        peak.fetch_max(self.running.len() as u64, Ordering::Relaxed);
        // Clients that went away free their sequence before the step.
        self.running.retain(|s| !s.events.is_closed());
        if !self.running.is_empty() {
            self.decode();
        }
        true
    }

    /// Validates, prefills and sends the first token; keeps the sequence
    /// running if it needs more.
    fn admit(&mut self, r: Request) {
        if r.events.is_closed() {
            return;
        }
        match self.prefill(&r) {
            Ok(first) => {
                self.counters.prefills.fetch_add(1, Ordering::Relaxed);
                let (cache, token) = first;
                if r.events.send(Event::Token(token)).is_err() {
                    return;
                }
                if r.max_tokens == 1 {
                    let _ = r.events.send(Event::Done);
                    return;
                }
                self.running.push(Seq {
                    events: r.events,
                    cache,
                    last: token,
                    generated: 1,
                    max_tokens: r.max_tokens,
                });
            }
            Err(e) => {
                let _ = r.events.send(Event::Error(e));
            }
        }
    }

    fn prefill(&self, r: &Request) -> Result<(SeqCache, u32), String> {
        let llama = &self.model.llama;
        let ctx = llama.config.context_length;
        if r.prompt.is_empty() {
            return Err("the prompt is empty: it needs at least one token".into());
        }
        if r.max_tokens == 0 {
            return Err("max_tokens is 0: it must be at least 1".into());
        }
        let total = r.prompt.len() + r.max_tokens as usize;
        if total > ctx {
            return Err(format!(
                "prompt ({} tokens) + max_tokens ({}) = {total} exceeds the model's context length {ctx}",
                r.prompt.len(),
                r.max_tokens
            ));
        }
        if let Some((i, t)) = r
            .prompt
            .iter()
            .enumerate()
            .find(|(_, t)| **t as usize >= llama.vocab)
        {
            return Err(format!(
                "prompt token {i} is {t}, outside the vocabulary ({} tokens)",
                llama.vocab
            ));
        }
        let err = |e: candle_core::Error| format!("prefill failed: {e}");
        let mut cache = llama.seq_cache(total).map_err(err)?;
        let logits = llama.prefill_seq(&r.prompt, &mut cache).map_err(err)?;
        let token = logits
            .argmax(0)
            .and_then(|t| t.to_scalar::<u32>())
            .map_err(err)?;
        Ok((cache, token))
    }

    /// One decode step over every running sequence.
    fn decode(&mut self) {
        let tokens: Vec<u32> = self.running.iter().map(|s| s.last).collect();
        let mut caches: Vec<&mut SeqCache> =
            self.running.iter_mut().map(|s| &mut s.cache).collect();
        let next = self
            .model
            .llama
            .decode_batch(&tokens, &mut caches)
            .and_then(|logits| argmax_rows(&logits));
        self.counters.steps.fetch_add(1, Ordering::Relaxed);
        self.counters
            .batched
            .fetch_add(tokens.len() as u64, Ordering::Relaxed);
        let next = match next {
            Ok(n) => n,
            Err(e) => return self.fail_all(&format!("decode failed: {e}")),
        };
        for (s, t) in self.running.iter_mut().zip(next) {
            s.last = t;
            s.generated += 1;
        }
        self.running.retain(|s| {
            if s.events.send(Event::Token(s.last)).is_err() {
                return false; // the client went away
            }
            if s.generated >= s.max_tokens {
                let _ = s.events.send(Event::Done);
                return false;
            }
            true
        });
    }

    /// Sends `why` to every running sequence and, when stopping, to every
    /// waiting request; frees them all.
    fn fail_all(&mut self, why: &str) {
        for s in self.running.drain(..) {
            let _ = s.events.send(Event::Error(why.to_owned()));
        }
        if self.stopping.load(Ordering::SeqCst) {
            while let Ok(r) = self.waiting.try_recv() {
                let _ = r.events.send(Event::Error(why.to_owned()));
            }
        }
    }
}
