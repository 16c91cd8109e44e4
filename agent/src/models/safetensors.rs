//! Reading a safetensors model (a directory with `config.json`,
//! `tokenizer.json` and `*.safetensors`) into [`Weights`] under GGUF names:
//! the file containment check, the config, the name map and the rotary
//! permutation.

use super::{err, malformed, LlamaConfig, Weights, TOKENIZER_JSON_KEY};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

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

pub(super) fn load_safetensors(dir: &Path) -> Result<Weights, String> {
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
    let mut metadata = llama_metadata(&config);
    metadata.insert(
        TOKENIZER_JSON_KEY.to_owned(),
        gguf_file::Value::String(tok_json),
    );
    Weights::checked(config, tensors, metadata, tokenizer).map_err(err(dir))
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
pub(super) fn llama_metadata(c: &LlamaConfig) -> BTreeMap<String, gguf_file::Value> {
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

#[cfg(test)]
mod tests {
    use super::super::load;
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
