//! Reading a GGUF file into [`Weights`]: the magic check, the llama metadata,
//! the tokenizer and the tensors.

use super::{malformed, LlamaConfig, Weights, TOKENIZER_JSON_KEY};
use candle_core::quantized::gguf_file;
use candle_core::Device;
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::Tokenizer;

/// What a GGUF file starts with (candle also reads the byte-swapped form).
const GGUF_MAGIC: [&[u8; 4]; 2] = [b"GGUF", b"FUGG"];

/// A metadata value that may be absent: `None` when it is (the caller's
/// documented default applies); present with the wrong type, an error that
/// names the key and the type (candle's message would print the value).
fn md_opt<T>(
    ct: &gguf_file::Content,
    key: &str,
    want: &str,
    get: impl Fn(&gguf_file::Value) -> candle_core::Result<T>,
) -> Result<Option<T>, String> {
    let Some(v) = ct.metadata.get(key) else {
        return Ok(None);
    };
    get(v).map(Some).map_err(|_| {
        format!(
            "metadata `{key}` should be a {want}, it is a {:?}",
            v.value_type()
        )
    })
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Result<u32, String> {
    md_opt(ct, key, "u32", gguf_file::Value::to_u32)?
        .ok_or_else(|| format!("metadata `{key}` is missing"))
}

/// llama.cpp's defaults for the llama metadata a GGUF file may leave out.
const DEFAULT_ROPE_BASE: f32 = 10_000.0;
const DEFAULT_RMS_EPS: f32 = 1e-5;
const DEFAULT_CONTEXT_LENGTH: u32 = 2048;

pub(super) fn load_gguf(path: &Path) -> Result<Weights, String> {
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
    let arch = md_opt(&ct, "general.architecture", "string", |v| {
        v.to_string().cloned()
    })
    .and_then(|a| a.ok_or_else(|| "metadata `general.architecture` is missing".to_owned()))
    .map_err(|x| e(&x))?;
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
            rope_base: md_opt(&ct, "llama.rope.freq_base", "f32", gguf_file::Value::to_f32)?
                .unwrap_or(DEFAULT_ROPE_BASE),
            rms_eps: md_opt(
                &ct,
                "llama.attention.layer_norm_rms_epsilon",
                "f32",
                gguf_file::Value::to_f32,
            )?
            .unwrap_or(DEFAULT_RMS_EPS) as f64,
            context_length: md_opt(&ct, "llama.context_length", "u32", gguf_file::Value::to_u32)?
                .unwrap_or(DEFAULT_CONTEXT_LENGTH) as usize,
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
    Weights::checked(config, tensors, metadata, tokenizer).map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::*;

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
        // An optional value: absent is the default's business, a wrong type
        // is an error (it used to fall back to the default silently).
        assert_eq!(
            md_opt(&ct, "llama.context_length", "u32", gguf_file::Value::to_u32),
            Ok(None)
        );
        ct.metadata.insert(
            "llama.rope.freq_base".into(),
            gguf_file::Value::String("hunter2".into()),
        );
        let e = md_opt(&ct, "llama.rope.freq_base", "f32", gguf_file::Value::to_f32)
            .expect_err("a string");
        assert!(e.contains("`llama.rope.freq_base` should be a f32"), "{e}");
    }
}
