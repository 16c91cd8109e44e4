//! Property tests of what crosses a trust boundary into the domain: the
//! sweep spec parser (operators' YAML) and the conversions from wire types
//! (`TryFrom<proto::…>`, and the parameters an agent is sent). 10,000
//! generated inputs each: none may panic, and every error must say where
//! it is (a field path or a line for the spec; the field's name for the
//! wire).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_domain::models::{EvalTrial, GenerateTrial, QuantizeTrial};
use chimera_domain::results::{Fingerprint, TrialRecord};
use chimera_domain::spec::{self, KernelTrial};
use chimera_domain::telemetry::Sample;
use chimera_proto::v1 as proto;
use proptest::prelude::*;
use std::collections::HashMap;

const CASES: u32 = 10_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // No files written next to the sources on a failure; the failing
        // input is in the test's output.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Scalars a spec might hold: the catalogue's own words, numbers of every
/// size and sign, odd text.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "kernel",
            "generate",
            "eval",
            "quantize",
            "matmul",
            "qmatmul",
            "softmax",
            "rope",
            "attention",
            "rmsnorm",
            "f32",
            "f16",
            "bf16",
            "q4_0",
            "q8_0",
            "Q8_0",
            "q4k",
            "fused",
            "naive",
            "grid",
            "random",
            "tpe",
            "halving",
            "each-class",
            "any",
            "all",
            "true",
            "null",
            "~",
            "m.gguf",
            "../x",
            "/etc/passwd",
            "1,2,3",
            "64,128,256",
            "1,1,1,1",
            "1048576,1048576,1048576",
            "0,0,0",
            "10m",
            "1h",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        "[a-z_]{0,12}",
        "\"[^\"\\\\]{0,20}\"",
        any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

/// YAML values: scalars, flow lists and maps, ranges, a little nesting.
fn value() -> impl Strategy<Value = String> {
    let leaf = scalar();
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            (
                any::<i32>(),
                any::<i32>(),
                prop::option::of(any::<i16>()),
                any::<bool>()
            )
                .prop_map(|(a, b, step, log)| match step {
                    Some(s) => format!("{{min: {a}, max: {b}, step: {s}}}"),
                    None => format!("{{min: {a}, max: {b}, log: {log}}}"),
                }),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "version",
            "name",
            "description",
            "workload",
            "params",
            "variants",
            "search",
            "placement",
            "target",
            "repeats",
            "harness",
            "budget",
            "op",
            "dtype",
            "format",
            "shape",
            "threads",
            "variant",
            "when",
            "model",
            "prompt_tokens",
            "new_tokens",
            "batch",
            "context",
            "chunks",
            "reference",
            "text",
            "save",
            "strategy",
            "samples",
            "seed",
            "trials",
            "objective",
            "constraints",
            "maximize",
            "minimize",
            "select",
            "kind",
            "max_trials",
            "max_duration",
            "warmup_iters",
            "min_iters",
            "min_time_ms",
            "max_time_ms",
        ])
        .prop_map(str::to_owned),
        "[a-z]{1,8}",
    ]
}

/// Whole documents: mappings of likely keys to values, and raw text.
fn document() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec((key(), value()), 0..10).prop_map(|kv| {
            kv.into_iter().map(|(k, v)| format!("{k}: {v}\n")).collect::<String>()
        }),
        4 => (value(), value(), value(), value()).prop_map(|(w, p, s, r)| {
            format!("name: t\nworkload: {w}\nparams: {p}\nsearch: {s}\nrepeats: {r}\n")
        }),
        1 => any::<String>(),
        1 => "[\\[\\]{}:,\\-#&*!|>'\" \\n]{0,64}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_spec_parser_never_panics_and_locates_every_error(doc in document()) {
        match spec::parse(&doc) {
            Ok(parsed) => {
                prop_assert!(!parsed.configs.is_empty());
                prop_assert!(parsed.configs.len() <= spec::MAX_CONFIGS);
            }
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                prop_assert!(
                    e.line.is_some() || (!e.path.is_empty() && e.path != "."),
                    "an error without a field or line: {e:?} for {doc:?}"
                );
            }
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.:-]{0,12}",
        any::<String>(),
        (0usize..3000).prop_map(|n| "x".repeat(n)),
        Just("a\nb".to_owned()),
    ]
}

fn fingerprint() -> impl Strategy<Value = proto::Fingerprint> {
    (
        (text(), text(), text(), text()),
        (text(), any::<u32>(), text()),
        prop::collection::hash_map(text(), text(), 0..80),
    )
        .prop_map(
            |((a, b, c, d), (e, threads, os), extra)| proto::Fingerprint {
                agent_version: a,
                agent_git_sha: b,
                candle_version: c,
                rustc_version: d,
                cpu_model: e,
                threads,
                os,
                extra,
            },
        )
}

fn sample() -> impl Strategy<Value = proto::TelemetrySample> {
    (
        text(),
        any::<i64>(),
        text(),
        text(),
        prop::collection::hash_map(text(), any::<f64>(), 0..140),
        prop::collection::vec(text(), 0..40),
    )
        .prop_map(
            |(device_id, t, phase, trial, fields, throttle)| proto::TelemetrySample {
                device_id,
                t_unix_ms: t,
                phase,
                trial,
                fields,
                throttle,
            },
        )
}

fn param_value() -> impl Strategy<Value = proto::ParamValue> {
    use proto::param_value::Kind;
    prop_oneof![
        Just(None),
        scalar().prop_map(|s| Some(Kind::Text(s.trim_matches('"').to_owned()))),
        any::<i64>().prop_map(|i| Some(Kind::Int(i))),
        any::<f64>().prop_map(|f| Some(Kind::Real(f))),
        any::<bool>().prop_map(|b| Some(Kind::Flag(b))),
    ]
    .prop_map(|kind| proto::ParamValue { kind })
}

fn params() -> impl Strategy<Value = HashMap<String, proto::ParamValue>> {
    prop::collection::hash_map(key(), param_value(), 0..8)
}

fn trial() -> impl Strategy<Value = proto::Trial> {
    (
        (text(), text(), any::<i32>(), text()),
        (
            params(),
            any::<u32>(),
            prop::collection::hash_map(text(), any::<f64>(), 0..4),
        ),
        (
            prop::option::of(fingerprint()),
            text(),
            any::<f64>(),
            text(),
        ),
    )
        .prop_map(
            |(
                (id, sweep_id, state, device_class),
                (params, attempt, metrics),
                (fingerprint, error, wall_ms, detail_json),
            )| {
                proto::Trial {
                    id,
                    sweep_id,
                    state,
                    device_class,
                    params,
                    attempt,
                    metrics,
                    fingerprint,
                    error,
                    wall_ms,
                    detail_json,
                    ..Default::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_fingerprint_from_the_wire_is_capped_and_errors_name_the_field(f in fingerprint()) {
        match Fingerprint::try_from(f.clone()) {
            Ok(ok) => {
                prop_assert!(ok.extra.len() <= chimera_domain::wire::MAX_MAP_ENTRIES);
                prop_assert!(serde_json::to_vec(&ok).unwrap().len() < 64 << 10);
            }
            Err(e) => prop_assert!(e.starts_with("fingerprint."), "{e}"),
        }
    }

    #[test]
    fn a_telemetry_sample_from_the_wire_is_capped_and_errors_name_the_field(s in sample()) {
        match Sample::try_from(s) {
            Ok(ok) => {
                prop_assert!(ok.fields.len() <= chimera_domain::wire::MAX_SAMPLE_FIELDS);
                prop_assert!(ok.fields.values().all(|v| v.is_finite()));
                chimera_domain::ids::check_device_id("d", &ok.device_id).unwrap();
            }
            Err(e) => prop_assert!(e.starts_with("sample."), "{e}"),
        }
    }

    #[test]
    fn a_trial_from_the_wire_converts_or_says_why(t in trial()) {
        match TrialRecord::try_from(t) {
            Ok(_) => {}
            Err(e) => prop_assert!(
                e.starts_with("fingerprint.") || e.starts_with("trial ")
                    || e.contains("state") || e.contains("parameter"),
                "{e}"
            ),
        }
    }

    #[test]
    fn parameters_an_agent_is_sent_are_checked_by_every_workload(p in params()) {
        match chimera_domain::params::params_from_proto(&p) {
            Ok(params) => {
                // Each typed trial either accepts the configuration or names a parameter.
                for r in [
                    KernelTrial::from_params(&params).map(drop),
                    GenerateTrial::from_params(&params).map(drop),
                    EvalTrial::from_params(&params).map(drop),
                    QuantizeTrial::from_params(&params).map(drop),
                ] {
                    if let Err(e) = r {
                        prop_assert!(e.contains('`') || e.contains("parameter"), "{e}");
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
