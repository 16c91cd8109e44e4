//! Tests of the spec parser: fields, lines, ranges, variants, limits and the shipped examples.

use super::*;
use crate::catalog::{KernelOp, Variant};
use crate::params::ParamValue;

const GOOD: &str = r#"
name: t
workload: kernel
params:
  shape: ["64,128,256", "1,256,512"]
  threads: 1
variants:
  - op: matmul
    dtype: [f32, f16]
  - op: qmatmul
    format: [q4_0, q8_0]
"#;

#[test]
fn expands_variants_as_a_union_of_grids() {
    let parsed = parse(GOOD).unwrap();
    // matmul: 2 dtypes x 2 shapes; qmatmul: 2 formats x 2 shapes
    assert_eq!(parsed.configs.len(), 8);
    let labels: Vec<String> = parsed.configs.iter().map(crate::params::label).collect();
    assert_eq!(labels[0], "op=matmul dtype=f32 shape=64,128,256 threads=1");
    assert!(labels.contains(&"op=qmatmul format=q8_0 shape=1,256,512 threads=1".to_owned()));
    assert_eq!(parsed.spec.placement, Placement::EachClass);
}

fn err(src: &str) -> SpecError {
    parse(src).expect_err("spec should be refused")
}

#[test]
fn unknown_field_names_field_and_line() {
    let e =
        err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  colour: red\n");
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    assert!(e.path.starts_with("params"), "{e}");
    assert!(
        e.message.starts_with("unknown field"),
        "no doubled path: {e}"
    );
}

#[test]
fn unknown_workload_and_op_are_refused_with_line() {
    let e = err("name: t\nworkload: training\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().contains("training"), "{e}");
    let e = err("name: t\nworkload: kernel\nparams:\n  op: [matmul, conv]\n  shape: 1,2,3\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.to_string().contains("conv"), "{e}");
    assert!(e.path.starts_with("params.op"), "{e}");
}

#[test]
fn wrong_type_and_empty_list_are_refused() {
    let e =
        err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  threads: many\n");
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.path.contains("threads"), "{e}");
    let e = err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: []\n");
    assert!(e.message.contains("empty list"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");
}

#[test]
fn semantic_errors_name_the_field() {
    let e = err(
        "name: t\nworkload: kernel\nparams:\n  op: qmatmul\n  format: q4k\n  shape: \"1,64,100\"\n",
    );
    assert!(e.message.contains("block size 256"), "{e}");
    assert_eq!(e.path, "params.shape");
    assert_eq!(e.line, Some(6), "{e}");
    let e = err("name: t\nworkload: kernel\nparams:\n  op: qmatmul\n  shape: 1,2,32\n");
    assert_eq!(e.path, "params.format", "{e}");
    let e = err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 0,2,3\n");
    assert!(e.message.contains("size 1 = 0"), "{e}");
}

#[test]
fn random_search_samples_the_grid_reproducibly() {
    let spec = |seed: u64| {
        format!("name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\", \"2,8,8\", \"3,8,8\", \"4,8,8\", \"5,8,8\", \"6,8,8\"]\n  threads: [1, 2]\nsearch: {{strategy: random, samples: 4, seed: {seed}}}\n")
    };
    let a = parse(&spec(7)).unwrap();
    assert_eq!(a.configs.len(), 4);
    assert_eq!(
        a.configs,
        parse(&spec(7)).unwrap().configs,
        "same seed, same sample"
    );
    assert_ne!(a.configs, parse(&spec(8)).unwrap().configs);
    let e =
        err("name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\nsearch: random\n");
    assert!(e.message.contains("needs `samples`"), "{e}");
    let e = err("name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\nsearch: tpe\n");
    assert!(e.message.contains("`tpe`"), "{e}");
    assert_eq!(e.line, Some(6), "{e}");
}

#[test]
fn numeric_ranges_expand_and_bad_ones_name_the_field() {
    let threads = |range: &str| -> Vec<String> {
        parse(&format!(
            "name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\n  threads: {range}\n"
        ))
        .unwrap()
        .configs
        .iter()
        .map(|c| c["threads"].to_string())
        .collect()
    };
    assert_eq!(threads("{min: 1, max: 4}"), ["1", "2", "3", "4"]);
    assert_eq!(threads("{min: 2, max: 9, step: 3}"), ["2", "5", "8"]);
    assert_eq!(
        threads("{min: 1, max: 40, log: true}"),
        ["1", "2", "4", "8", "16", "32"]
    );
    assert_eq!(
        threads("{min: 1, max: 100, log: true, count: 3}"),
        ["1", "10", "100"]
    );
    let model = parse(
        "name: g\nworkload: generate\nparams:\n  model: m.gguf\n  threads: {min: 1, max: 2}\n",
    )
    .unwrap();
    assert_eq!(model.configs.len(), 2);
    for (range, needle) in [
        ("{min: 4, max: 1}", "min = 4 must be at most max = 1"),
        ("{min: 1}", "needs `min` and `max`"),
        ("{min: 0, max: 8, log: true}", "min > 0"),
        ("{min: 1, max: 8, stride: 2}", "unknown field `stride`"),
        ("{min: 1, max: 2000}", "between 1 and 1024"),
    ] {
        let e = err(&format!(
            "name: r\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,8,8\n  threads: {range}\n"
        ));
        assert!(e.message.contains(needle), "{range}: {e}");
        assert_eq!(e.path, "params.threads", "{e}");
        assert_eq!(e.line, Some(6), "{e}");
    }
}

#[test]
fn adaptive_search_and_budgets_are_checked_against_the_workload() {
    let base = "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,8,8\", \"2,8,8\", \"3,8,8\"]\n  threads: [1, 2]\n";
    let p = parse(&format!(
        "{base}search: {{strategy: tpe, trials: 3, objective: {{maximize: gflop_per_s}}, constraints: [\"cov <= 0.1\"]}}\n"
    ))
    .unwrap();
    assert!(p.spec.search.is_adaptive());
    assert_eq!(
        p.configs.len(),
        6,
        "an adaptive search keeps the whole space"
    );
    let e = err(&format!(
        "{base}search: {{strategy: tpe, trials: 3, objective: {{maximize: decode_tokens_per_s}}}}\n"
    ));
    assert!(
        e.message
            .contains("reports no metric `decode_tokens_per_s`"),
        "{e}"
    );
    assert_eq!(e.path, "search.objective");
    assert_eq!(e.line, Some(7), "{e}");
    let p = parse(&format!(
        "{base}repeats: 2\nbudget: {{max_trials: 5, max_duration: 2m}}\n"
    ))
    .unwrap();
    assert_eq!(
        p.configs.len(),
        2,
        "5 trials at 2 repeats: the first 2 configurations"
    );
    assert_eq!(p.spec.budget.max_duration_s, Some(120));
    let e = err(&format!("{base}repeats: 3\nbudget: {{max_trials: 2}}\n"));
    assert!(e.message.contains("less than repeats"), "{e}");
}

#[test]
fn variants_say_which_devices_they_are_for() {
    let p = parse(
        "name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nvariants:\n  - threads: [1, 2]\n    when: {kind: cpu}\n  - when: {kind: gpu}\n",
    )
    .unwrap();
    assert_eq!(p.configs.len(), 3);
    let kinds: Vec<String> = p
        .conditions
        .iter()
        .map(|w| serde_json::to_string(&w.as_ref().unwrap().kind).unwrap())
        .collect();
    assert_eq!(kinds, ["[\"cpu\"]", "[\"cpu\"]", "[\"gpu\"]"]);
    assert!(!p.configs[2].contains_key("threads"));
    let m = parse(
        "name: g\nworkload: generate\nparams:\n  model: m.gguf\nvariants:\n  - threads: [1, 2]\n    when: {select: \"labels.site == lab\"}\n  - format: q8_0\n",
    )
    .unwrap();
    assert_eq!(m.configs.len(), 3);
    assert!(m.conditions[0].is_some() && m.conditions[2].is_none());
    let e = err(
        "name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\n  when: {kind: cpu}\n",
    );
    assert!(e.message.contains("belongs in a variant"), "{e}");
    assert_eq!(e.line, Some(6), "{e}");
    let e = err("name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nplacement: any\nvariants:\n  - when: {kind: cpu}\n");
    assert!(e.message.contains("needs placement"), "{e}");
    let e = err("name: c\nworkload: kernel\nparams:\n  op: matmul\n  shape: 8,8,8\nvariants:\n  - when: {kind: tpu}\n");
    assert!(e.message.contains("tpu"), "{e}");
}

#[test]
fn kernel_ops_check_shape_arity_and_variants() {
    let e = err("name: t\nworkload: kernel\nparams:\n  op: softmax\n  shape: 1,2,3\n");
    assert!(e.message.contains("rows,cols"), "{e}");
    assert_eq!(e.line, Some(5), "{e}");
    let e =
        err("name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,2,3\n  variant: fused\n");
    assert_eq!(e.path, "params.variant", "{e}");
    let p = parse("name: t\nworkload: kernel\nparams:\n  op: rope\n  shape: 1,9,256,64\n  variant: [fused, naive]\n").unwrap();
    assert_eq!(p.configs.len(), 2);
    let t = KernelTrial::from_params(&p.configs[1]).unwrap();
    assert_eq!((t.op, t.variant), (KernelOp::Rope, Variant::Naive));
    assert_eq!(
        crate::catalog::capability("kernel", &p.configs[0]),
        "kernel/rope/fused"
    );
}

#[test]
fn model_workloads_check_every_configuration() {
    let good = "name: q\nworkload: quantize\nparams:\n  model: m.gguf\n  format: [q8_0, q4k]\n  threads: [1, 2]\n";
    let p = parse(good).unwrap();
    assert_eq!(p.configs.len(), 4);
    assert_eq!(
        crate::catalog::capability("quantize", &p.configs[0]),
        "quantize"
    );
    let e = err("name: q\nworkload: quantize\nparams:\n  model: m.gguf\n  format: [q8_0, q9k]\n");
    assert_eq!(e.path, "params.format", "{e}");
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("`q9k`"), "{e}");
    let e = err("name: g\nworkload: generate\nparams:\n  model: ../m.gguf\n");
    assert!(e.message.contains("escapes"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
    let e = err("name: g\nworkload: generate\nparams:\n  model: m.gguf\n  temperature: 0.7\n");
    assert_eq!(e.path, "params.temperature", "{e}");
    let e = err("name: e\nworkload: eval\nparams:\n  model: m.gguf\n  role: reference\n");
    assert!(e.message.contains("unknown parameter `role`"), "{e}");
    let e = err("name: e\nworkload: eval\nparams:\n  model: m.gguf\n  context: 8\n");
    assert!(e.message.contains("`context` = `8`"), "{e}");
}

#[test]
fn kernel_trial_round_trips_through_params() {
    let parsed = parse(GOOD).unwrap();
    for c in &parsed.configs {
        let t = KernelTrial::from_params(c).unwrap();
        assert_eq!(t.threads, Some(1));
    }
    let mut bad = parsed.configs[0].clone();
    bad.insert("shape".into(), ParamValue::Int(3));
    assert!(KernelTrial::from_params(&bad)
        .unwrap_err()
        .contains("shape"));
}

#[test]
fn a_huge_expansion_is_counted_and_refused_before_it_is_built() {
    // 300 x 300 x 256 prompt/new/batch values: 23 million configurations.
    let src = "name: t\nworkload: generate\nparams:\n  model: m.gguf\n  format: q8_0\n  prompt_tokens: {min: 1, max: 300}\n  new_tokens: {min: 1, max: 300}\n  batch: {min: 1, max: 256}\n";
    let e = err(src);
    assert!(e.message.contains("more than 100000 configurations"), "{e}");
    // A count past u64 is refused, not wrapped.
    let shapes: Vec<String> = (1..=4096).map(|i| format!("\"{i},64,64\"")).collect();
    let list = format!("[{}]", shapes.join(","));
    let src = format!(
        "name: t\nworkload: kernel\nparams:\n  op: matmul\n  shape: {list}\n  threads: {{min: 1, max: 1024}}\n"
    );
    assert!(err(&src).message.contains("more than 100000"));
    // Within the configuration cap, repeats still count: 4096 x 1000 trials.
    let src = format!(
        "name: t\nworkload: kernel\nrepeats: 1000\nparams:\n  op: matmul\n  shape: {list}\n"
    );
    let e = err(&src);
    assert_eq!(e.path, "repeats");
    assert!(
        e.message.contains("4096 configurations x 1000 repeats"),
        "{e}"
    );
    let tight = super::parse_with(GOOD, &super::Limits { max_trials: 3 }).unwrap_err();
    assert!(tight.message.contains("limit of 3 trials"), "{tight}");
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!(
        "name: t\nworkload: kernel\nparams: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = err(&deep);
    assert!(e.message.contains("more than 32 deep"), "{e}");
    assert_eq!(e.line, Some(3));
    let mut block = String::from("name: t\n");
    for i in 0..40 {
        block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
    }
    assert!(err(&block).message.contains("deep"));
    let dashes = format!("name: t\nx:\n  {}a\n", "- ".repeat(40));
    assert!(err(&dashes).message.contains("deep"));
    // Brackets and quotes inside scalars and comments do not count.
    let fine = format!(
        "{GOOD}description: \"{}\" # {}\nx: it's [fine\n",
        "[".repeat(100),
        "{".repeat(100)
    );
    assert!(super::nesting::nesting_depth(&fine).depth < 10);
}

#[test]
fn alias_expansion_is_bounded() {
    // "Billion laughs": nine levels of aliases, each ten times the last.
    let mut src = String::from("name: t\nworkload: kernel\nx0: &a0 [\"lol\"]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(",");
        src.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    src.push_str("params: {op: matmul, shape: *a9}\n");
    let e = err(&src);
    assert!(e.message.contains("aliases"), "{e}");
    assert_eq!(e.line, Some(4));
    // `*` inside text is no alias.
    let fine = format!("{GOOD}description: \"*not an alias\" # *nor this\n");
    assert!(super::parse(&fine).is_ok());
}

#[cfg(test)]
mod examples {
    /// Every shipped example parses (and expands) as it is.
    #[test]
    fn every_example_spec_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let parsed =
                    crate::spec::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!parsed.configs.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 8, "{n} examples");
    }
}

#[test]
fn a_parsed_sweep_keeps_its_text_and_finds_lines() {
    let p = parse(GOOD).unwrap();
    assert_eq!(p.source, GOOD);
    assert_eq!(p.line_of("variants"), Some(7));
    assert_eq!(p.line_of("threads"), find_line(GOOD, "threads", None));
    assert_eq!(p.line_of("budget"), None);
}

/// The error a spec gets, as an operator reads it.
fn refusal(yaml: &str) -> String {
    match parse(yaml) {
        Ok(_) => "accepted".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn names_are_read_case_aside_and_errors_read_as_words_with_suggestions() {
    let base = "name: x\nworkload: kernel\nparams:\n  op: qmatmul\n  shape: 1,64,64\n";
    // Case aside, where unambiguous.
    let upper = parse(&format!("{base}  format: Q8_0\n")).unwrap();
    assert_eq!(upper.configs[0]["format"].to_string(), "q8_0");
    assert!(parse("name: x\nworkload: Kernel\nparams:\n  op: MatMul\n  shape: 1,64,64\n").is_ok());
    expect_test::expect![[r#"line 6: params.format: unknown format `q8-0`, expected one of: q4_0, q4_1, q5_0, q5_1, q8_0, q2k, q3k, q4k, q5k, q6k, q8k; did you mean `q8_0`?"#]]
        .assert_eq(&refusal(&format!("{base}  format: q8-0\n")));
    let base = format!("{base}  format: q8_0\n");
    expect_test::expect![[r#"line 7: params.threads: `many` is text, expected a whole number"#]]
        .assert_eq(&refusal(&format!("{base}  threads: many\n")));
    expect_test::expect![[r#"line 7: params.colour: unknown field `colour`, expected one of `op`, `dtype`, `format`, `shape`, `threads`, `variant`, `when`"#]]
        .assert_eq(&refusal(&format!("{base}  colour: red\n")));
    expect_test::expect![[r#"line 7: params.shapes: unknown field `shapes`, expected one of `op`, `dtype`, `format`, `shape`, `threads`, `variant`, `when`; did you mean `shape`?"#]]
        .assert_eq(&refusal(&format!("{base}  shapes: 1,8,8\n")));
    expect_test::expect![[r#"line 7: placement: unknown variant `each_class`, expected one of `each-class`, `any`, `all`; did you mean `each-class`?"#]]
        .assert_eq(&refusal(&format!("{base}placement: each_class\n")));
    // A missing qmatmul format is a second error of its own.
    expect_test::expect![[r#"
        2 errors:
          line 6: params.threads: `many` is text, expected a whole number
          params.format: missing: op qmatmul needs a quantization `format` (q4_0, q8_0, q4k, ...)"#]]
        .assert_eq(&refusal("name: x\nworkload: kernel\nparams:\n  op: qmatmul\n  shape: 1,64,64\n  threads: many\n"));
}

#[test]
fn every_error_is_reported_in_one_pass_each_with_its_line() {
    let spec = "name: x
workload: kernel
params:
  op: qmatmul
  format: q8-0
  shape: 1,64,64
  threads: many
repeats: 0
placement: each_class
colour: red
";
    expect_test::expect![[r#"
        5 errors:
          line 5: params.format: unknown format `q8-0`, expected one of: q4_0, q4_1, q5_0, q5_1, q8_0, q2k, q3k, q4k, q5k, q6k, q8k; did you mean `q8_0`?
          line 7: params.threads: `many` is text, expected a whole number
          line 8: repeats: repeats = 0 must be between 1 and 1000
          line 9: placement: unknown variant `each_class`, expected one of `each-class`, `any`, `all`; did you mean `each-class`?
          line 10: colour: unknown field `colour`, expected one of `version`, `name`, `description`, `workload`, `params`, `variants`, `search`, `placement`, `target`, `repeats`, `harness`, `budget`, `order_seed`, `slo`"#]]
    .assert_eq(&refusal(spec));
    // Variants: each error at its own variant's line; a missing field the
    // removal of a bad one causes is not reported.
    let spec = "name: x
workload: kernel
params:
  op: matmul
  shape: 1,64,64
variants:
  - threads: 1
  - threads: lots
    dtype: f33
  - threads: 2
";
    let e = err(spec);
    let all: Vec<(Option<usize>, &str)> = std::iter::once(&e)
        .chain(&e.also)
        .map(|e| (e.line, e.path.as_str()))
        .collect();
    assert_eq!(
        all,
        [
            (Some(8), "variants[1].threads"),
            (Some(9), "variants[1].dtype")
        ],
        "{e}"
    );
    // One error reads as before.
    assert!(err(
        "name: x\nworkload: kernel\nparams:\n  op: matmul\n  shape: 1,64,64\nrepeats: 0\n"
    )
    .also
    .is_empty());
}

#[test]
fn locate_follows_the_path_into_lists() {
    let src = "params:\n  threads: 1\nvariants:\n  - threads: 2\n  - dtype: f16\n    threads: 3\nharness:\n  threads: 9\n";
    assert_eq!(locate(src, "params.threads"), Some(2));
    assert_eq!(locate(src, "variants[0].threads"), Some(4));
    assert_eq!(locate(src, "variants[1].threads"), Some(6));
    assert_eq!(locate(src, "harness.threads"), Some(8));
    // Not there: the first line naming the last key.
    assert_eq!(locate(src, "budget.threads"), Some(2));
}
