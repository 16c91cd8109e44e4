//! Models: where the agent may read them (the model-directory guard), how they
//! load (GGUF, or safetensors + config.json) into one tensor set with GGUF
//! names, and the llama-family forward pass the workloads run.
//!
//! Architecture invariant: a workload reaches a model file only through
//! [`ModelDirs::resolve`], which refuses any path that leaves the configured
//! directories (by `..` or by a symlink).

pub mod dirs;
pub mod fetch;
mod gguf;
pub mod llama;
pub mod quant;
pub mod redact;
mod safetensors;

pub use dirs::ModelDirs;
pub use redact::public_reason;
pub use safetensors::{permute_for_rope, unpermute_for_rope};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use chimera_domain::models::WeightFormat;
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::Tokenizer;

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
        return safetensors::load_safetensors(dir);
    }
    gguf::load_gguf(path)
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

impl Weights {
    /// A loaded model, once every tensor the forward pass needs is there
    /// ([`check_tensors`]); `stored` is summed up from the tensors.
    fn checked(
        config: LlamaConfig,
        tensors: BTreeMap<String, QTensor>,
        metadata: BTreeMap<String, gguf_file::Value>,
        tokenizer: Tokenizer,
    ) -> Result<Self, String> {
        check_tensors(&config, &tensors)?;
        Ok(Weights {
            stored: stored_summary(&tensors),
            config,
            tensors,
            metadata,
            tokenizer,
        })
    }

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
    use candle_core::{Device, Tensor};

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
            metadata: safetensors::llama_metadata(&config),
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
}
