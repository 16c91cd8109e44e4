//! The model workloads (`quantize`, `generate`, `eval`): their parameters, typed
//! and checked. The spec checks every configuration with these at submit; the
//! agent checks what the wire carried with the same code before it runs.

use crate::catalog::QuantFormat;
use crate::ids::TrialId;
use crate::params::{ParamValue, Params};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The format a model's weights are stored or run in: a GGML quantization
/// format or a dense float type, named as candle names its `GgmlDType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    Quant(QuantFormat),
}

impl WeightFormat {
    /// Every format candle can quantize a model to, widest first.
    pub fn all() -> Vec<WeightFormat> {
        let mut v = vec![WeightFormat::F32, WeightFormat::F16, WeightFormat::Bf16];
        v.extend(QuantFormat::ALL.into_iter().map(WeightFormat::Quant));
        v
    }

    /// The format's name (`f16`, `q4k`).
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Quant(q) => q.name(),
        }
    }

    /// Weights per block: a quantized row length must be a multiple of it.
    pub fn block_size(self) -> u64 {
        match self {
            WeightFormat::Quant(q) => q.block_size(),
            _ => 1,
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = WeightFormat::all();
        crate::names::pick(s, &all, WeightFormat::name).map_err(|near| {
            let names: Vec<&str> = all.iter().map(|f| f.name()).collect();
            format!(
                "format `{s}` is not one candle can quantize to; expected one of: {}{}",
                names.join(", "),
                crate::names::hint(near)
            )
        })
    }
}

impl Serialize for WeightFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for WeightFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A model named by a path relative to one of the agent's model directories.
/// Checked here for shape only (relative, no `..`); the agent resolves it and
/// refuses anything that leaves its directories, symlinks included.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ModelPath(String);

impl ModelPath {
    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ModelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 1024 {
            return Err(format!(
                "model path `{s}` must be 1 to 1024 characters, relative to a model directory"
            ));
        }
        if s.starts_with('/') || s.starts_with('\\') || s.contains('\0') {
            return Err(format!(
                "model path `{s}` must be relative to a model directory, not absolute"
            ));
        }
        if s.split(['/', '\\']).any(|c| c == "..") {
            return Err(format!(
                "model path `{s}` escapes the model directories (`..` is not allowed)"
            ));
        }
        Ok(ModelPath(s.to_owned()))
    }
}

/// Longest prompt, generation or evaluation context accepted at submit (tokens);
/// the agent also checks against the model's own context length.
pub const MAX_TOKENS: u32 = 32_768;
/// Largest batch of sequences a `generate` trial decodes together.
pub const MAX_BATCH: u32 = 256;
/// Most chunks of `context` tokens an `eval` trial scores.
pub const MAX_CHUNKS: u32 = 1024;
/// Next-token entries per position kept of the reference distribution.
pub const REFERENCE_TOP_K: usize = 32;
/// The parameter that marks an `eval` trial as the sweep's reference computation.
pub const ROLE: &str = "role";
/// Its value.
pub const ROLE_REFERENCE: &str = "reference";

/// Typed access to a configuration's parameters, with errors that name them.
pub(crate) struct Reader<'a> {
    pub(crate) params: &'a Params,
    pub(crate) workload: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self.params.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "unknown parameter `{k}` for workload {}; it takes: {}",
                self.workload,
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    pub(crate) fn text(&self, name: &str) -> Result<Option<&'a str>, String> {
        match self.params.get(name) {
            None => Ok(None),
            Some(ParamValue::Text(s)) => Ok(Some(s)),
            Some(other) => Err(format!("parameter `{name}` = `{other}` must be text")),
        }
    }

    pub(crate) fn parsed<T: FromStr<Err = String>>(&self, name: &str) -> Result<Option<T>, String> {
        self.text(name)?
            .map(|s| s.parse().map_err(|e| format!("parameter `{name}`: {e}")))
            .transpose()
    }

    pub(crate) fn int(&self, name: &str, min: u32, max: u32) -> Result<Option<u32>, String> {
        match self.params.get(name) {
            None => Ok(None),
            Some(ParamValue::Int(v)) if (min as i64..=max as i64).contains(v) => {
                Ok(Some(*v as u32))
            }
            Some(other) => Err(format!(
                "parameter `{name}` = `{other}` must be a whole number from {min} to {max}"
            )),
        }
    }

    pub(crate) fn flag(&self, name: &str) -> Result<Option<bool>, String> {
        match self.params.get(name) {
            None => Ok(None),
            Some(ParamValue::Flag(b)) => Ok(Some(*b)),
            Some(other) => Err(format!(
                "parameter `{name}` = `{other}` must be true or false"
            )),
        }
    }

    pub(crate) fn model(&self) -> Result<ModelPath, String> {
        self.parsed("model")?.ok_or_else(|| {
            "parameter `model` is missing: give a path relative to a model directory".to_owned()
        })
    }

    pub(crate) fn threads(&self) -> Result<Option<u32>, String> {
        self.int("threads", 1, 1024)
    }
}

/// A `quantize` trial: quantize every weight of `model` to `format`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeTrial {
    pub model: ModelPath,
    pub format: WeightFormat,
    /// Threads quantizing tensors in parallel; `None` means every logical core.
    pub threads: Option<u32>,
    /// Write the quantized model as GGUF next to the source.
    pub save: bool,
}

impl QuantizeTrial {
    /// Parameters the workload takes.
    pub const PARAMS: &'static [&'static str] = &["model", "format", "threads", "save"];

    /// Reads and checks a configuration.
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let r = Reader {
            params: p,
            workload: "quantize",
        };
        r.check_known(Self::PARAMS)?;
        Ok(QuantizeTrial {
            model: r.model()?,
            format: r
                .parsed("format")?
                .ok_or("parameter `format` is missing: the format to quantize to")?,
            threads: r.threads()?,
            save: r.flag("save")?.unwrap_or(false),
        })
    }
}

/// A `generate` trial: prefill a prompt, then decode greedily.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateTrial {
    pub model: ModelPath,
    /// Re-quantize the weights to this format at load; `None` runs them as stored.
    pub format: Option<WeightFormat>,
    pub prompt_tokens: u32,
    pub new_tokens: u32,
    /// Sequences decoded together.
    pub batch: u32,
    pub threads: Option<u32>,
}

impl GenerateTrial {
    /// Parameters the workload takes.
    pub const PARAMS: &'static [&'static str] = &[
        "model",
        "format",
        "prompt_tokens",
        "new_tokens",
        "batch",
        "threads",
    ];

    /// Reads and checks a configuration.
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let r = Reader {
            params: p,
            workload: "generate",
        };
        r.check_known(Self::PARAMS)?;
        let t = GenerateTrial {
            model: r.model()?,
            format: r.parsed("format")?,
            prompt_tokens: r.int("prompt_tokens", 1, MAX_TOKENS)?.unwrap_or(128),
            new_tokens: r.int("new_tokens", 1, MAX_TOKENS)?.unwrap_or(64),
            batch: r.int("batch", 1, MAX_BATCH)?.unwrap_or(1),
            threads: r.threads()?,
        };
        if t.prompt_tokens + t.new_tokens > MAX_TOKENS {
            return Err(format!(
                "prompt_tokens + new_tokens = {} exceeds {MAX_TOKENS}",
                t.prompt_tokens + t.new_tokens
            ));
        }
        Ok(t)
    }
}

/// How an `eval` trial measures its divergence from the reference (the `kl`
/// parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlMode {
    /// Over the whole vocabulary: the trial computes the reference
    /// distribution itself, on its own device, and no reference trial runs.
    Full,
    /// Over the reference's top [`REFERENCE_TOP_K`] tokens plus one bucket for
    /// the rest, handed on by a reference trial: a lower bound of the full KL,
    /// for vocabularies whose full distributions are too large to keep.
    TopK,
}

impl KlMode {
    /// The spelling in a spec.
    pub fn name(self) -> &'static str {
        match self {
            KlMode::Full => "full",
            KlMode::TopK => "topk",
        }
    }
}

impl FromStr for KlMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [KlMode::Full, KlMode::TopK]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a KL mode; the modes are: full, topk"))
    }
}

/// An `eval` trial: perplexity over the shipped text and, against the reference
/// distribution, KL divergence and top-1 agreement.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalTrial {
    pub model: ModelPath,
    /// Re-quantize to this format at load; `None` evaluates the weights as stored.
    pub format: Option<WeightFormat>,
    /// The format of the reference model (default f32: the weights dequantized).
    pub reference: WeightFormat,
    /// Tokens per evaluated chunk.
    pub context: u32,
    /// Chunks of the text evaluated.
    pub chunks: u32,
    pub threads: Option<u32>,
    /// Full-vocabulary KL computed in the trial, or top-K against a reference trial.
    pub kl: KlMode,
    /// This trial computes the reference distribution for the others.
    pub is_reference: bool,
}

impl EvalTrial {
    /// Parameters the workload takes.
    pub const PARAMS: &'static [&'static str] = &[
        "model",
        "format",
        "reference",
        "context",
        "chunks",
        "threads",
        "kl",
        ROLE, // last: set by the controller, never in a spec
    ];

    /// Reads and checks a configuration.
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let r = Reader {
            params: p,
            workload: "eval",
        };
        r.check_known(Self::PARAMS)?;
        let is_reference = match r.text(ROLE)? {
            None => false,
            Some(ROLE_REFERENCE) => true,
            Some(other) => {
                return Err(format!(
                    "parameter `{ROLE}` = `{other}`: the only role is `{ROLE_REFERENCE}`, set by the controller"
                ))
            }
        };
        let t = EvalTrial {
            model: r.model()?,
            format: r.parsed("format")?,
            reference: r.parsed("reference")?.unwrap_or(WeightFormat::F32),
            context: r.int("context", 16, MAX_TOKENS)?.unwrap_or(256),
            chunks: r.int("chunks", 1, MAX_CHUNKS)?.unwrap_or(1),
            threads: r.threads()?,
            kl: r.parsed("kl")?.unwrap_or(KlMode::Full),
            is_reference,
        };
        Ok(t)
    }

    /// The configuration of the reference trial this configuration is scored
    /// against: same model, text and context, in the reference format. Every
    /// configuration sharing it shares one reference computation per sweep.
    pub fn reference_params(p: &Params) -> Params {
        let mut out = Params::new();
        for key in ["model", "context", "chunks"] {
            if let Some(v) = p.get(key) {
                out.insert(key.to_owned(), v.clone());
            }
        }
        let reference = p
            .get("reference")
            .cloned()
            .unwrap_or(ParamValue::Text(WeightFormat::F32.name().to_owned()));
        out.insert("format".to_owned(), reference.clone());
        out.insert("reference".to_owned(), reference);
        out.insert(ROLE.to_owned(), ParamValue::Text(ROLE_REFERENCE.to_owned()));
        out
    }
}

/// The reference trials of an `eval` sweep, and which one each `kl: topk`
/// configuration is scored against: what [`eval_references`] computes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalRefs {
    /// One reference configuration per distinct
    /// [`EvalTrial::reference_params`], in order of first use. Reference `i`
    /// is the sweep's `i`-th trial: its id is [`TrialId::nth(i)`](TrialId::nth),
    /// and the sweep's other trials are numbered after the references.
    pub references: Vec<Params>,
    /// Per configuration (in the order given): the index into
    /// [`EvalRefs::references`] of the reference it depends on; `None` for a
    /// `kl: full` configuration, which computes its reference itself.
    pub depends: Vec<Option<usize>>,
}

impl EvalRefs {
    /// Per configuration: the id of the reference trial it depends on.
    pub fn depends_on(&self) -> Vec<Option<TrialId>> {
        self.depends.iter().map(|d| d.map(TrialId::nth)).collect()
    }
}

/// The reference numbering of an `eval` sweep: one reference trial per
/// distinct [`EvalTrial::reference_params`] of its `kl: topk` configurations
/// (`kl: full` ones need none), in order of first use, reference `i` with trial id [`TrialId::nth(i)`](TrialId::nth), and
/// each configuration's dependency on its reference. A pure function of the
/// configurations, so a restarted controller numbers a stored sweep the same.
pub fn eval_references(configs: &[Params]) -> EvalRefs {
    let mut out = EvalRefs::default();
    for config in configs {
        if !needs_reference(config) {
            out.depends.push(None);
            continue;
        }
        let r = EvalTrial::reference_params(config);
        let i = match out.references.iter().position(|p| *p == r) {
            Some(i) => i,
            None => {
                out.references.push(r);
                out.references.len() - 1
            }
        };
        out.depends.push(Some(i));
    }
    out
}

/// Whether an `eval` configuration is scored against a reference trial's
/// artifact (`kl: topk`). Unreadable configurations were refused at submit;
/// here they count as the default, `full`.
fn needs_reference(config: &Params) -> bool {
    matches!(config.get("kl"), Some(ParamValue::Text(m)) if m.parse() == Ok(KlMode::TopK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParamValue)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn formats_round_trip_and_unknown_is_named() {
        for f in WeightFormat::all() {
            assert_eq!(f.name().parse::<WeightFormat>(), Ok(f));
        }
        assert_eq!(WeightFormat::all().len(), 14);
        let e = "q3_0".parse::<WeightFormat>().unwrap_err();
        assert!(e.contains("`q3_0`") && e.contains("q4k"), "{e}");
    }

    #[test]
    fn model_paths_must_stay_relative() {
        assert!("smollm2/model.gguf".parse::<ModelPath>().is_ok());
        for bad in ["", "/etc/passwd", "../x.gguf", "a/../../b", "a\\..\\b"] {
            let e = bad.parse::<ModelPath>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn trials_name_the_bad_parameter() {
        let model = ("model", ParamValue::Text("m.gguf".into()));
        let e = QuantizeTrial::from_params(&params(std::slice::from_ref(&model))).unwrap_err();
        assert!(e.contains("`format`"), "{e}");
        let e =
            GenerateTrial::from_params(&params(&[model.clone(), ("batch", ParamValue::Int(0))]))
                .unwrap_err();
        assert!(e.contains("`batch` = `0`"), "{e}");
        let e = EvalTrial::from_params(&params(&[model.clone(), ("ctx", ParamValue::Int(5))]))
            .unwrap_err();
        assert!(e.contains("unknown parameter `ctx`"), "{e}");
        let t = EvalTrial::from_params(&params(&[
            model,
            ("format", ParamValue::Text("q8_0".into())),
        ]))
        .unwrap();
        assert_eq!((t.context, t.reference), (256, WeightFormat::F32));
    }

    #[test]
    fn reference_params_share_model_text_and_context() {
        let p = params(&[
            ("model", ParamValue::Text("m.gguf".into())),
            ("format", ParamValue::Text("q4k".into())),
            ("context", ParamValue::Int(128)),
            ("threads", ParamValue::Int(2)),
        ]);
        let r = EvalTrial::reference_params(&p);
        let t = EvalTrial::from_params(&r).unwrap();
        assert!(t.is_reference);
        assert_eq!(t.format, Some(WeightFormat::F32));
        assert_eq!(t.context, 128);
        assert_eq!(t.threads, None);
    }

    #[test]
    fn eval_references_are_numbered_in_order_of_first_use() {
        let eval = |model: &str, format: &str, context: i64| {
            params(&[
                ("model", ParamValue::Text(model.into())),
                ("format", ParamValue::Text(format.into())),
                ("context", ParamValue::Int(context)),
                ("kl", ParamValue::Text("topk".into())),
            ])
        };
        let configs = [
            eval("b.gguf", "q4k", 128),
            eval("a.gguf", "q8_0", 128),
            eval("b.gguf", "q8_0", 128), // b at 128 again: reference 0
            eval("b.gguf", "q4k", 64),   // another context: its own reference
        ];
        let refs = eval_references(&configs);
        assert_eq!(refs.references.len(), 3);
        assert_eq!(refs.depends, [Some(0), Some(1), Some(0), Some(2)]);
        for (i, c) in configs.iter().enumerate() {
            let r = refs.depends[i].map(|d| &refs.references[d]);
            assert_eq!(r, Some(&EvalTrial::reference_params(c)));
        }
        assert_eq!(
            refs.depends_on(),
            [
                Some(TrialId::nth(0)),
                Some(TrialId::nth(1)),
                Some(TrialId::nth(0)),
                Some(TrialId::nth(2))
            ]
        );
        assert_eq!(eval_references(&[]), EvalRefs::default());
    }

    #[test]
    fn full_kl_configurations_need_no_reference_trial() {
        let eval = |format: &str, kl: Option<&str>| {
            let mut p = params(&[
                ("model", ParamValue::Text("m.gguf".into())),
                ("format", ParamValue::Text(format.into())),
            ]);
            if let Some(kl) = kl {
                p.insert("kl".into(), ParamValue::Text(kl.into()));
            }
            p
        };
        let configs = [
            eval("q4k", None),          // default: full
            eval("q8_0", Some("topk")), // reference 0
            eval("q4_0", Some("full")), // full: none
            eval("q2k", Some("TopK")),  // case aside: reference 0 again
        ];
        let refs = eval_references(&configs);
        assert_eq!(refs.references.len(), 1);
        assert_eq!(refs.depends, [None, Some(0), None, Some(0)]);
        assert_eq!(
            eval_references(&configs[..1]),
            EvalRefs {
                references: vec![],
                depends: vec![None]
            }
        );
    }

    #[test]
    fn kl_mode_defaults_to_full_and_names_a_bad_value() {
        let model = ("model", ParamValue::Text("m.gguf".into()));
        let t = EvalTrial::from_params(&params(std::slice::from_ref(&model))).unwrap();
        assert_eq!(t.kl, KlMode::Full);
        let t = EvalTrial::from_params(&params(&[
            model.clone(),
            ("kl", ParamValue::Text("topk".into())),
        ]))
        .unwrap();
        assert_eq!(t.kl, KlMode::TopK);
        let e = EvalTrial::from_params(&params(&[model, ("kl", ParamValue::Text("half".into()))]))
            .unwrap_err();
        expect_test::expect![[
            r#"parameter `kl`: `half` is not a KL mode; the modes are: full, topk"#
        ]]
        .assert_eq(&e);
    }
}
