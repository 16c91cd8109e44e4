//! Models: where the agent may read them (the model-directory guard), how they
//! load (GGUF, or safetensors + config.json) into one tensor set with GGUF
//! names, and the llama-family forward pass the workloads run.
//!
//! Architecture invariant: a workload reaches a model file only through
//! [`ModelDirs::resolve`], which refuses any path that leaves the configured
//! directories (by `..` or by a symlink).

pub mod fetch;
pub mod llama;
pub mod quant;
pub mod redact;

pub use redact::public_reason;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use chimera_domain::models::{ModelPath, WeightFormat};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// The directories an agent may read models from (canonical paths).
#[derive(Clone, Debug, Default)]
pub struct ModelDirs {
    dirs: Vec<PathBuf>,
}

impl ModelDirs {
    /// Checks that every directory exists; an error names the one that does not.
    pub fn new(dirs: &[PathBuf]) -> Result<Self, String> {
        let dirs = dirs
            .iter()
            .map(|d| {
                let c = d
                    .canonicalize()
                    .map_err(|e| format!("--model-dir `{}`: {e}", d.display()))?;
                if !c.is_dir() {
                    return Err(format!("--model-dir `{}` is not a directory", d.display()));
                }
                Ok(c)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ModelDirs { dirs })
    }

    /// The directories, canonical.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The file a model path names: the first directory that has it. A path
    /// that resolves (through a symlink) outside its directory is refused.
    pub fn resolve(&self, model: &ModelPath) -> Result<PathBuf, String> {
        // Re-check the shape: the wire carried it, the spec check may be old.
        let model: ModelPath = model.as_str().parse()?;
        if self.dirs.is_empty() {
            return Err(format!(
                "model `{model}`: this agent has no model directory (start it with --model-dir)"
            ));
        }
        for dir in &self.dirs {
            let candidate = dir.join(model.as_str());
            if std::fs::symlink_metadata(&candidate).is_err() {
                continue;
            }
            let real = candidate
                .canonicalize()
                .map_err(|e| format!("model `{model}` in `{}`: {e}", dir.display()))?;
            if !real.starts_with(dir) {
                return Err(format!(
                    "model `{model}` resolves to `{}`, outside the model directory `{}` (a symlink escapes it); refused",
                    real.display(),
                    dir.display()
                ));
            }
            return Ok(real);
        }
        Err(format!(
            "model `{model}` not found in the model directories: {}",
            self.dirs
                .iter()
                .map(|d| format!("`{}`", d.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Hyper-parameters of a llama-family model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub hidden: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    pub context_length: usize,
}

/// A model's tensors under GGUF names, with what is needed to run it and to
/// write it back as GGUF.
pub struct Weights {
    pub config: LlamaConfig,
    pub tensors: BTreeMap<String, QTensor>,
    /// GGUF metadata to carry into a written file (architecture, tokenizer).
    pub metadata: BTreeMap<String, gguf_file::Value>,
    pub tokenizer: Tokenizer,
    /// How the weights are stored, for reports (`q4_1 x210, q8_0 x1, f32 x61`).
    pub stored: String,
}

/// Metadata key under which a tokenizer.json travels in GGUF files this agent
/// writes from safetensors models (which have no GGUF tokenizer fields).
const TOKENIZER_JSON_KEY: &str = "chimera.tokenizer_json";

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("model file `{}`: {e}", path.display())
}

/// The error for a file that is not what it should be. A parser's message
/// may quote the bytes it choked on (candle's `unknown magic 0x…`, serde's
/// `invalid type: string "…"`), and a trial's error is read by every operator:
/// the error says what was `expected`, the parser's message goes to this
/// agent's log only (inside the trial's span, so with its ids).
fn malformed(path: &Path, expected: &str, parser: &dyn std::fmt::Display) -> String {
    tracing::warn!(file = %path.display(), error = %parser, "model file rejected: {expected}");
    format!("model file `{}`: {expected}", path.display())
}

/// What a GGUF file starts with (candle also reads the byte-swapped form).
const GGUF_MAGIC: [&[u8; 4]; 2] = [b"GGUF", b"FUGG"];

fn stored_summary(tensors: &BTreeMap<String, QTensor>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tensors.values() {
        *counts.entry(ggml_name(t.dtype()).to_owned()).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter()
        .map(|(k, n)| format!("{k} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lower-case GGML type name as the catalogue spells it.
pub fn ggml_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "f32",
        GgmlDType::F16 => "f16",
        GgmlDType::BF16 => "bf16",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q8_1 => "q8_1",
        GgmlDType::Q2K => "q2k",
        GgmlDType::Q3K => "q3k",
        GgmlDType::Q4K => "q4k",
        GgmlDType::Q5K => "q5k",
        GgmlDType::Q6K => "q6k",
        GgmlDType::Q8K => "q8k",
    }
}

/// candle's type for a catalogue format.
pub fn ggml_type(f: WeightFormat) -> GgmlDType {
    use chimera_domain::catalog::QuantFormat as Q;
    match f {
        WeightFormat::F32 => GgmlDType::F32,
        WeightFormat::F16 => GgmlDType::F16,
        WeightFormat::Bf16 => GgmlDType::BF16,
        WeightFormat::Quant(q) => match q {
            Q::Q4_0 => GgmlDType::Q4_0,
            Q::Q4_1 => GgmlDType::Q4_1,
            Q::Q5_0 => GgmlDType::Q5_0,
            Q::Q5_1 => GgmlDType::Q5_1,
            Q::Q8_0 => GgmlDType::Q8_0,
            Q::Q2k => GgmlDType::Q2K,
            Q::Q3k => GgmlDType::Q3K,
            Q::Q4k => GgmlDType::Q4K,
            Q::Q5k => GgmlDType::Q5K,
            Q::Q6k => GgmlDType::Q6K,
            Q::Q8k => GgmlDType::Q8K,
        },
    }
}

/// Loads a model: a `.gguf` file, or a directory (or its `config.json`) of a
/// safetensors model.
pub fn load(path: &Path) -> Result<Weights, String> {
    if path.is_dir() || path.file_name().is_some_and(|n| n == "config.json") {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        return load_safetensors(dir);
    }
    load_gguf(path)
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<u32, String> {
    let v = ct
        .metadata
        .get(key)
        .ok_or_else(|| format!("metadata `{key}` is missing"))?;
    // candle's message would print the value; the type says enough.
    v.to_u32().map_err(|_| {
        format!(
            "metadata `{key}` should be a u32, it is a {:?}",
            v.value_type()
        )
    })
}

fn load_gguf(path: &Path) -> Result<Weights, String> {
    let e = |x: &dyn std::fmt::Display| format!("model file `{}`: {x}", path.display());
    let mut file = std::fs::File::open(path).map_err(|x| e(&x))?;
    let mut magic = [0u8; 4];
    {
        use std::io::{Read, Seek};
        match file.read_exact(&mut magic) {
            Err(x) if x.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(x) => return Err(e(&x)),
            Ok(()) => {}
        }
        // Never echo what the file starts with: it may be any file in the
        // model directories, and the error is public.
        if !GGUF_MAGIC.contains(&&magic) {
            return Err(e(
                &"not a GGUF file (a GGUF file starts with the bytes `GGUF`)",
            ));
        }
        file.rewind().map_err(|x| e(&x))?;
    }
    let ct = gguf_file::Content::read(&mut file).map_err(|x| {
        malformed(
            path,
            "not a readable GGUF file (it starts like one, but its header or metadata is malformed)",
            &x,
        )
    })?;
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(e(&format!(
            "unsupported architecture `{arch}`: this build runs llama-family models (general.architecture = llama)"
        )));
    }
    let config = (|| -> Result<LlamaConfig, String> {
        let n_head = md_u32(&ct, "llama.attention.head_count")? as usize;
        let hidden = md_u32(&ct, "llama.embedding_length")? as usize;
        if n_head == 0 || !hidden.is_multiple_of(n_head) {
            return Err(format!(
                "embedding_length {hidden} is not a multiple of head_count {n_head}"
            ));
        }
        Ok(LlamaConfig {
            n_layer: md_u32(&ct, "llama.block_count")? as usize,
            n_head,
            n_kv_head: md_u32(&ct, "llama.attention.head_count_kv")? as usize,
            hidden,
            head_dim: hidden / n_head,
            rope_base: ct
                .metadata
                .get("llama.rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.0),
            rms_eps: ct
                .metadata
                .get("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(1e-5) as f64,
            context_length: md_u32(&ct, "llama.context_length").unwrap_or(2048) as usize,
        })
    })()
    .map_err(|x| e(&x))?;
    let tokenizer = match ct
        .metadata
        .get(TOKENIZER_JSON_KEY)
        .and_then(|v| v.to_string().ok())
    {
        Some(json) => json.parse::<Tokenizer>().map_err(|x| e(&x))?,
        None => {
            use candle_core::quantized::tokenizer::TokenizerFromGguf;
            Tokenizer::from_gguf(&ct).map_err(|x| e(&format!("tokenizer: {x}")))?
        }
    };
    let mut tensors = BTreeMap::new();
    for name in ct.tensor_infos.keys() {
        let t = ct
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|x| e(&format!("tensor `{name}`: {x}")))?;
        tensors.insert(name.clone(), t);
    }
    let metadata = ct.metadata.into_iter().collect();
    check_tensors(&config, &tensors).map_err(|x| e(&x))?;
    Ok(Weights {
        stored: stored_summary(&tensors),
        config,
        tensors,
        metadata,
        tokenizer,
    })
}

/// Checks that every tensor the forward pass needs is there, with its shape.
fn check_tensors(c: &LlamaConfig, t: &BTreeMap<String, QTensor>) -> Result<(), String> {
    let need = |name: &str| -> Result<&QTensor, String> {
        t.get(name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))
    };
    let emb = need("token_embd.weight")?;
    if emb.shape().dims().len() != 2 || emb.shape().dims()[1] != c.hidden {
        return Err(format!(
            "token_embd.weight has shape {:?}, expected [vocab, {}]",
            emb.shape().dims(),
            c.hidden
        ));
    }
    need("output_norm.weight")?;
    for l in 0..c.n_layer {
        for part in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "attn_norm",
            "ffn_gate",
            "ffn_down",
            "ffn_up",
            "ffn_norm",
        ] {
            need(&format!("blk.{l}.{part}.weight"))?;
        }
    }
    Ok(())
}

/// The subset of a Hugging Face llama `config.json` this loader reads.
#[derive(serde::Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f32>,
    max_position_embeddings: Option<usize>,
}

/// `file` inside the model directory `dir`, with symlinks resolved: a file
/// that a symlink takes out of the directory is refused (the model-dir guard
/// checks the directory a trial names; this checks each file read from it).
fn contained(dir: &Path, file: &Path) -> Result<PathBuf, String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("model directory: {e}"))?;
    let real = file
        .canonicalize()
        .map_err(|e| format!("model file `{name}`: {e}"))?;
    if !real.starts_with(&dir) {
        return Err(format!(
            "model file `{name}` is a symlink out of its model directory; refused"
        ));
    }
    Ok(real)
}

fn load_safetensors(dir: &Path) -> Result<Weights, String> {
    let config_path = contained(dir, &dir.join("config.json"))?;
    let e = |x: &dyn std::fmt::Display| format!("model file `{}`: {x}", config_path.display());
    let text = std::fs::read_to_string(&config_path).map_err(|x| e(&x))?;
    let hf: HfConfig = serde_json::from_str(&text).map_err(|x| config_error(&config_path, &x))?;
    let llama = hf.model_type.as_deref() == Some("llama")
        || hf
            .architectures
            .iter()
            .flatten()
            .any(|a| a == "LlamaForCausalLM");
    if !llama {
        return Err(e(&format!(
            "unsupported architecture (model_type `{}`, architectures {:?}): this build runs llama-family models",
            hf.model_type.unwrap_or_default(),
            hf.architectures.unwrap_or_default()
        )));
    }
    if hf.num_attention_heads == 0 || !hf.hidden_size.is_multiple_of(hf.num_attention_heads) {
        return Err(e(&"hidden_size is not a multiple of num_attention_heads"));
    }
    let config = LlamaConfig {
        n_layer: hf.num_hidden_layers,
        n_head: hf.num_attention_heads,
        n_kv_head: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        hidden: hf.hidden_size,
        head_dim: hf.hidden_size / hf.num_attention_heads,
        rope_base: hf.rope_theta.unwrap_or(10_000.0),
        rms_eps: hf.rms_norm_eps,
        context_length: hf.max_position_embeddings.unwrap_or(2048),
    };
    let tok_path = contained(dir, &dir.join("tokenizer.json"))?;
    let tok_json = std::fs::read_to_string(&tok_path).map_err(err(&tok_path))?;
    let tokenizer: Tokenizer = tok_json.parse().map_err(err(&tok_path))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err(dir))?
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| contained(dir, &p))
        .collect::<Result<_, _>>()?;
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "model directory `{}` has no .safetensors file",
            dir.display()
        ));
    }
    let mut tensors = BTreeMap::new();
    for f in &files {
        let loaded = candle_core::safetensors::load(f, &Device::Cpu).map_err(err(f))?;
        for (name, t) in loaded {
            let Some(gguf) = gguf_name(&name) else {
                continue; // rotary caches and the like
            };
            let t = match gguf.rsplit('.').nth(1) {
                Some("attn_q") => permute_for_rope(&t, config.n_head),
                Some("attn_k") => permute_for_rope(&t, config.n_kv_head),
                _ => Ok(t),
            }
            .map_err(err(f))?;
            let dtype = match t.dtype() {
                DType::F16 => GgmlDType::F16,
                DType::BF16 => GgmlDType::BF16,
                _ => GgmlDType::F32,
            };
            let t = if dtype == GgmlDType::F32 {
                t.to_dtype(DType::F32).map_err(err(f))?
            } else {
                t
            };
            let q = QTensor::quantize(&t, dtype).map_err(err(f))?;
            tensors.insert(gguf, q);
        }
    }
    check_tensors(&config, &tensors).map_err(err(dir))?;
    let mut metadata = llama_metadata(&config);
    metadata.insert(
        TOKENIZER_JSON_KEY.to_owned(),
        gguf_file::Value::String(tok_json),
    );
    Ok(Weights {
        stored: stored_summary(&tensors),
        config,
        tensors,
        metadata,
        tokenizer,
    })
}

/// The error for a `config.json` serde cannot read as a llama config. serde's
/// messages about syntax, and about missing or repeated fields, name only
/// positions and this loader's field names; its messages about a wrong value
/// quote the value, so those say what was expected instead.
fn config_error(path: &Path, x: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = x.to_string();
    let names_only = match x.classify() {
        Category::Io | Category::Syntax | Category::Eof => true,
        Category::Data => text.starts_with("missing field") || text.starts_with("duplicate field"),
    };
    if names_only {
        return format!("model file `{}`: {text}", path.display());
    }
    malformed(
        path,
        &format!(
            "a field at line {} column {} has the wrong type or value for a llama config.json \
             (numbers for hidden_size, num_attention_heads, num_hidden_layers, rms_norm_eps, ...)",
            x.line(),
            x.column()
        ),
        x,
    )
}

/// GGUF metadata describing a llama config.
fn llama_metadata(c: &LlamaConfig) -> BTreeMap<String, gguf_file::Value> {
    use gguf_file::Value as V;
    BTreeMap::from([
        ("general.architecture".into(), V::String("llama".into())),
        ("llama.block_count".into(), V::U32(c.n_layer as u32)),
        ("llama.attention.head_count".into(), V::U32(c.n_head as u32)),
        (
            "llama.attention.head_count_kv".into(),
            V::U32(c.n_kv_head as u32),
        ),
        ("llama.embedding_length".into(), V::U32(c.hidden as u32)),
        (
            "llama.rope.dimension_count".into(),
            V::U32(c.head_dim as u32),
        ),
        ("llama.rope.freq_base".into(), V::F32(c.rope_base)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            V::F32(c.rms_eps as f32),
        ),
        (
            "llama.context_length".into(),
            V::U32(c.context_length as u32),
        ),
    ])
}

/// The GGUF name of a Hugging Face llama tensor.
fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = match part {
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.down_proj.weight" => "ffn_down",
        "mlp.up_proj.weight" => "ffn_up",
        "input_layernorm.weight" => "attn_norm",
        "post_attention_layernorm.weight" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}.weight"))
}

/// Hugging Face stores q/k rows for rotary embedding in two halves; GGUF (and
/// the forward pass here) interleaves them. The same permutation llama.cpp's
/// converter applies.
pub fn permute_for_rope(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// The inverse of [`permute_for_rope`] (GGUF layout back to Hugging Face's).
pub fn unpermute_for_rope(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

impl Weights {
    /// Writes the tensors (as they are now) and metadata as a GGUF file at
    /// `path`, atomically: the file appears whole or not at all; its size is
    /// returned.
    ///
    /// The bytes go to a new temporary file in the same directory, created
    /// with `O_EXCL` under a random name (`.NAME.XXXXXX.partial`), so a
    /// symlink planted at a predictable name is never followed and two trials
    /// saving the same file never write into one another's. It is synced,
    /// then renamed onto `path`; on any error it is removed. rename(2) does
    /// not follow a symlink at `path` either: it replaces the link itself, and
    /// whatever the link pointed at stays as it was.
    pub fn write_gguf(&self, path: &Path) -> Result<u64, String> {
        use std::io::Write;
        let e = |x: &dyn std::fmt::Display| format!("model file `{}`: {x}", path.display());
        let name = path
            .file_name()
            .ok_or_else(|| e(&"the path names no file"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".partial")
            // As `File::create` would: the umask decides, not tempfile's 0600.
            .permissions(
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o666),
            )
            .tempfile_in(dir)
            .map_err(|x| e(&format!("create a temporary file in its directory: {x}")))?;
        {
            let mut f = std::io::BufWriter::new(tmp.as_file_mut());
            let md: Vec<(&str, &gguf_file::Value)> = self
                .metadata
                .iter()
                .filter(|(k, _)| k.as_str() != "general.file_type")
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            let ts: Vec<(&str, &QTensor)> =
                self.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
            gguf_file::write(&mut f, &md, &ts).map_err(|x| e(&x))?;
            f.flush().map_err(|x| e(&x))?;
        }
        tmp.as_file().sync_all().map_err(|x| e(&x))?;
        // On failure the error holds the temporary file, and drops (removes) it.
        let file = tmp.persist(path).map_err(|x| e(&x.error))?;
        // The size of what was written, through the open file, not the path.
        Ok(file.metadata().map_err(|x| e(&x))?.len())
    }

    /// Tokenizes text without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenizer: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_round_trips() {
        let w = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute_for_rope(&w, 2).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        let back = unpermute_for_rope(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn hf_names_map_to_gguf() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.k_proj.weight").as_deref(),
            Some("blk.3.attn_k.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
    }

    /// A tiny model to write: one tensor, one metadata key.
    fn tiny() -> Weights {
        let t = Tensor::arange(0f32, 64.0, &Device::Cpu)
            .and_then(|t| t.reshape((2, 32)))
            .and_then(|t| QTensor::quantize(&t, GgmlDType::F32))
            .expect("tensor");
        let config = LlamaConfig {
            n_layer: 0,
            n_head: 1,
            n_kv_head: 1,
            hidden: 32,
            head_dim: 32,
            rope_base: 10_000.0,
            rms_eps: 1e-5,
            context_length: 16,
        };
        Weights {
            metadata: llama_metadata(&config),
            config,
            tensors: BTreeMap::from([("token_embd.weight".to_owned(), t)]),
            tokenizer: Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default()),
            stored: String::new(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    fn is_gguf(path: &Path) -> bool {
        let mut f = std::fs::File::open(path).expect("open");
        gguf_file::Content::read(&mut f)
            .map(|c| c.tensor_infos.contains_key("token_embd.weight"))
            .unwrap_or(false)
    }

    #[test]
    fn two_saves_of_one_file_do_not_clash_and_leave_no_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("m.q8_0.gguf");
        let w = tiny();
        let barrier = std::sync::Barrier::new(2);
        let sizes: Vec<Result<u64, String>> = std::thread::scope(|s| {
            let save = || {
                barrier.wait();
                w.write_gguf(&target)
            };
            let a = s.spawn(save);
            let b = s.spawn(save);
            vec![a.join().expect("thread a"), b.join().expect("thread b")]
        });
        let len = std::fs::metadata(&target).expect("written").len();
        for size in sizes {
            assert_eq!(size, Ok(len));
        }
        assert!(is_gguf(&target));
        assert_eq!(names(dir.path()), ["m.q8_0.gguf"]);
    }

    #[test]
    fn a_symlink_planted_at_the_old_partial_name_or_the_target_is_not_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let models = root.path().join("models");
        std::fs::create_dir(&models).expect("mkdir");
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let target = models.join("m.q8_0.gguf");
        // The name the old code wrote through, unconditionally.
        std::os::unix::fs::symlink(&victim, models.join("m.q8_0.gguf.partial")).expect("symlink");
        tiny().write_gguf(&target).expect("save");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
        assert!(is_gguf(&target));
        // A link at the final name is replaced, not written through.
        let linked = models.join("n.q8_0.gguf");
        std::os::unix::fs::symlink(&victim, &linked).expect("symlink");
        tiny().write_gguf(&linked).expect("save over the link");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious");
        assert!(!std::fs::symlink_metadata(&linked)
            .expect("stat")
            .file_type()
            .is_symlink());
        assert!(is_gguf(&linked));
        assert_eq!(
            names(&models),
            ["m.q8_0.gguf", "m.q8_0.gguf.partial", "n.q8_0.gguf"]
        );
    }

    #[test]
    fn a_failed_save_removes_its_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the file should go: the final rename fails.
        let target = dir.path().join("m.q8_0.gguf");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::write(target.join("keep"), b"x").expect("write");
        let e = tiny()
            .write_gguf(&target)
            .expect_err("cannot replace a directory");
        assert!(e.contains("m.q8_0.gguf"), "{e}");
        assert_eq!(names(dir.path()), ["m.q8_0.gguf"]);
    }

    #[test]
    fn a_file_that_is_not_gguf_is_refused_without_echoing_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, bytes) in [
            ("key.gguf", &b"SECRET-TOKEN-1234"[..]),
            ("short.gguf", &b"SE"[..]),
            ("empty.gguf", &b""[..]),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            let e = load(&path).err().expect("not GGUF");
            assert!(e.contains(name) && e.contains("not a GGUF file"), "{e}");
            // Neither as text nor as the number candle would print
            // (`unknown magic 0x43455253`).
            let rest = e.replace(&*path.to_string_lossy(), "");
            assert!(!rest.contains("SE") && !rest.contains("0x"), "{e}");
        }
        // It starts like GGUF, then the version is text.
        let path = dir.path().join("fake.gguf");
        std::fs::write(&path, b"GGUFSECRET-TOKEN").expect("write");
        let e = load(&path).err().expect("not readable");
        assert!(e.contains("fake.gguf") && e.contains("GGUF"), "{e}");
        let rest = e.replace(&*path.to_string_lossy(), "");
        let version = u32::from_le_bytes(*b"SECR").to_string();
        assert!(!rest.contains("SECR") && !rest.contains(&version), "{e}");
    }

    #[test]
    fn a_config_json_with_a_wrong_value_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"llama","hidden_size":"hunter2","num_attention_heads":1,
                "num_hidden_layers":1,"rms_norm_eps":1e-5}"#,
        )
        .expect("write");
        let e = load(dir.path()).err().expect("bad value");
        assert!(e.contains("config.json") && e.contains("line 1"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // What names only this loader's fields is kept.
        std::fs::write(dir.path().join("config.json"), r#"{"model_type":"llama"}"#).expect("write");
        let e = load(dir.path()).err().expect("missing field");
        assert!(e.contains("missing field `hidden_size`"), "{e}");
    }

    #[test]
    fn a_metadata_value_of_the_wrong_type_is_named_by_its_type() {
        let mut ct = gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata: Default::default(),
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        };
        ct.metadata.insert(
            "llama.block_count".into(),
            gguf_file::Value::String("hunter2".into()),
        );
        let e = md_u32(&ct, "llama.block_count").expect_err("a string");
        assert!(
            e.contains("`llama.block_count`") && e.contains("String"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_file_of_a_safetensors_model_that_links_out_of_its_directory_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let secret = root.path().join("secret.json");
        std::fs::write(&secret, r#"{"model_type":"llama"}"#).expect("write");
        let model = root.path().join("models").join("m");
        std::fs::create_dir_all(&model).expect("mkdir");
        std::os::unix::fs::symlink(&secret, model.join("config.json")).expect("symlink");
        let e = load(&model)
            .err()
            .expect("a link out of the directory was followed");
        assert!(e.contains("symlink out of its model directory"), "{e}");
        assert!(!e.contains(&root.path().display().to_string()), "{e}");
    }
}
