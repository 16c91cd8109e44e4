//! OpenAI-compatible engines: the streaming client the load generator uses
//! (`/v1/completions`, `stream: true`, server-sent events), and
//! `llama-server` started for one trial on a loopback port.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Largest SSE line accepted from an engine, bytes.
const MAX_LINE: usize = 1 << 20;
/// How long a started engine may take to load its model and answer health.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// An OpenAI-compatible completions endpoint.
pub struct Http {
    client: reqwest::Client,
    url: String,
    model: String,
    /// llama.cpp extensions (`cache_prompt: false`) are sent.
    llama: bool,
}

impl Http {
    /// A client of the server at `base` (`http://127.0.0.1:8080`), asking
    /// for `model`.
    pub fn new(base: &str, model: &str, llama: bool) -> Result<Http, String> {
        // A new connection per request: servers close kept-alive
        // connections after a few requests (llama-server's HTTP library
        // after 5), and a request racing that close fails; a loopback
        // connect costs microseconds.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Http {
            client,
            url: format!("{}/v1/completions", base.trim_end_matches('/')),
            model: model.to_owned(),
            llama,
        })
    }

    /// Streams one completion of `prompt` (token ids, so every engine sees
    /// exactly the same input) of exactly `max_tokens` tokens (`ignore_eos`),
    /// greedy. `on_chunk` is told each text chunk's arrival.
    pub async fn complete(
        &self,
        prompt: &[u32],
        max_tokens: u32,
        deadline: tokio::time::Instant,
        chunks: &mut Vec<Instant>,
    ) -> Result<Option<u32>, String> {
        use futures::StreamExt;
        let mut body = serde_json::json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "min_tokens": max_tokens,
            "ignore_eos": true,
            "temperature": 0.0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if self.llama {
            // No prefix reuse across requests: candle has none either.
            body["cache_prompt"] = serde_json::Value::Bool(false);
        }
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let send = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send();
        let resp = tokio::time::timeout_at(deadline, send)
            .await
            .map_err(|_| "timed out before the response started".to_owned())?
            .map_err(|e| format!("request to {}: {e}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            let text = tokio::time::timeout_at(deadline, resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(format!(
                "{} answered {status}: {}",
                self.url,
                text.chars().take(300).collect::<String>()
            ));
        }
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut usage = None;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| "timed out while streaming".to_owned())?;
            let bytes = match next {
                None => return Err("the stream ended before `data: [DONE]`".into()),
                Some(b) => b.map_err(|e| format!("stream: {e}"))?,
            };
            let at = Instant::now();
            buf.extend_from_slice(&bytes);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(usage);
                }
                let v: serde_json::Value = serde_json::from_str(data)
                    .map_err(|e| format!("an event that is not JSON ({e}): {data:.200}"))?;
                if let Some(err) = v.get("error") {
                    return Err(format!("the engine reported: {err}"));
                }
                let text = v
                    .pointer("/choices/0/text")
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                if !text.is_empty() {
                    chunks.push(at);
                }
                if let Some(n) = v
                    .pointer("/usage/completion_tokens")
                    .and_then(serde_json::Value::as_u64)
                {
                    usage = u32::try_from(n).ok();
                }
            }
            if buf.len() > MAX_LINE {
                return Err(format!("an event line longer than {MAX_LINE} bytes"));
            }
        }
    }
}

/// A `llama-server` process serving one model on a loopback port; stopped
/// when dropped.
pub struct LlamaServer {
    child: Child,
    pub base: String,
    pub version: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Starts `bin` on `model` with `slots` parallel sequences of `slot_ctx`
    /// tokens each and `threads` threads, on a free loopback port.
    pub fn start(
        bin: &Path,
        model: &Path,
        slots: u32,
        slot_ctx: u32,
        threads: u32,
    ) -> Result<LlamaServer, String> {
        let version = engine_version(bin)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free loopback port: {e}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let log = dir.path().join("llama-server.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let ctx = slots
            .checked_mul(slot_ctx)
            .ok_or("context size overflows")?;
        let child = Command::new(bin)
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", &slots.to_string(), "-c", &ctx.to_string()])
            .args(["-t", &threads.to_string(), "-tb", &threads.to_string()])
            .args(["-b", "512", "-ub", "512"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        Ok(LlamaServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            version,
            log,
            _dir: dir,
        })
    }

    /// Waits until the server answers `/health` with 200 (model loaded).
    pub async fn ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}/health", self.base);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "llama-server exited ({status}) before it was ready: {}",
                    self.log_tail()
                ));
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "llama-server was not ready after {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id (its telemetry is the host's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line of `bin --version` that names the version
/// (`version: 1 (0c1e570)`).
pub fn engine_version(bin: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {} --version: {e}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text
        .lines()
        .find(|l| l.contains("version"))
        .unwrap_or("unknown")
        .trim()
        .chars()
        .take(200)
        .collect())
}
