//! The parse pipeline: YAML text checked, parsed, counted, expanded and sampled into a [`ParsedSweep`].

use super::expansion::{count_spaces, spaces};
use super::{check_nesting, expand, find_line, Limits, Placement, Search, Space, SpecError};
use super::{locate, readable, SweepSpec, Target, MAX_ERRORS};
use crate::params::Params;

/// A spec parsed and expanded: what the controller stores and schedules.
#[derive(Clone, Debug)]
pub struct ParsedSweep {
    /// The spec.
    pub spec: SweepSpec,
    /// Every configuration, in a stable order.
    pub configs: Vec<Params>,
    /// Per configuration: the devices its variant is for (`when`), if it says.
    pub conditions: Vec<Option<Target>>,
    /// The YAML as submitted, for display and storage, and to locate fields
    /// in ([`ParsedSweep::line_of`]).
    pub source: String,
}

impl ParsedSweep {
    /// The 1-based line of [`ParsedSweep::source`] that first sets `key`
    /// (see [`find_line`]), to point an error found after parsing at the text.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        find_line(&self.source, key, None)
    }
}

/// Parses YAML text into a spec and expands it under the default
/// [`Limits`]; every error names field and line.
pub fn parse(source: &str) -> Result<ParsedSweep, SpecError> {
    parse_with(source, &Limits::default())
}

/// Parses YAML text into a spec and expands it; every error names field and
/// line. The document's nesting is checked before it is parsed, and the
/// number of configurations and trials is counted (checked arithmetic)
/// before any is built, so a small spec cannot make a huge expansion.
pub fn parse_with(source: &str, limits: &Limits) -> Result<ParsedSweep, SpecError> {
    check_nesting(source)?;
    let de = serde_yaml_ng::Deserializer::from_str(source);
    let first = match serde_path_to_error::deserialize(de) {
        Ok(spec) => match check(spec, source, limits) {
            Ok(parsed) => return Ok(parsed),
            Err(e) => e,
        },
        Err(e) => from_serde(e, source),
    };
    // All of them in the order of the text (those with no line last).
    let mut all = vec![first.clone()];
    all.extend(further_errors(source, limits, &first));
    all.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    let mut all = all.into_iter();
    let head = all.next().unwrap_or(first);
    Err(SpecError {
        also: all.collect(),
        ..head
    })
}

/// A deserialization error as a [`SpecError`]: serde's path, the line
/// (located in the text when the parser does not know it) and readable
/// wording.
fn from_serde(e: serde_path_to_error::Error<serde_yaml_ng::Error>, source: &str) -> SpecError {
    let mut path = e.path().to_string();
    let inner = e.into_inner();
    let line = inner.location().map(|l| l.line());
    let mut message = inner.to_string();
    // serde_yaml_ng appends " at line L column C"; the line is reported separately.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    // serde_yaml_ng may prefix its own path (`params: ...`); ours is more precise.
    if let Some((head, rest)) = message.split_once(": ") {
        let pathlike = head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c));
        if pathlike && path.starts_with(head) {
            message = rest.to_owned();
        }
    }
    // An unknown top-level field is refused by the document's reader, at
    // the document's path: name the field.
    if path.is_empty() || path == "." {
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(f, _)| f)
        {
            path = field.to_owned();
        }
    }
    // Values buffered by serde (untagged forms), and documents read from a
    // value rather than the text, lose their position (no line, or line 1):
    // locate the field in the text instead.
    let line = match line {
        None | Some(1) if !path.is_empty() && path != "." => locate(source, &path).or(line),
        other => other,
    };
    SpecError {
        path,
        line,
        message: readable(&message),
        also: Vec::new(),
    }
}

/// The errors after `first`, found in the same pass: the field `first`
/// names is taken out of the document and the rest checked again, up to
/// [`MAX_ERRORS`] in all. The search stops at an error that taking a field
/// out could have caused (a field now missing, or one at a path already
/// taken out), so every error listed is one the author has to fix.
fn further_errors(source: &str, limits: &Limits, first: &SpecError) -> Vec<SpecError> {
    let Ok(mut doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(source) else {
        return Vec::new();
    };
    let mut taken_out: Vec<String> = Vec::new();
    let mut out: Vec<SpecError> = Vec::new();
    let mut last = first.clone();
    while out.len() + 1 < MAX_ERRORS {
        let Some(field) = removable(&last.path) else {
            break;
        };
        if !remove(&mut doc, &field) {
            break;
        }
        taken_out.push(field);
        let next = match serde_path_to_error::deserialize(doc.clone()) {
            Ok(spec) => match check(spec, source, limits) {
                Ok(_) => break,
                Err(e) => e,
            },
            Err(e) => from_serde(e, source),
        };
        let caused = next.message.starts_with("missing field")
            || next.message.contains("must be given before")
            || taken_out.iter().any(|t| {
                let leaf = t.rsplit('.').next().unwrap_or(t);
                next.path == *t
                    || next.path.starts_with(&format!("{t}."))
                    || next.path.starts_with(&format!("{t}["))
                    || (next.message.contains("missing")
                        && next.message.contains(&format!("`{leaf}`")))
            });
        if caused || next == *first || out.contains(&next) {
            break;
        }
        out.push(next.clone());
        last = next;
    }
    out
}

/// The field an error at `path` is fixed in, as the part of the document
/// to take out: a section's entry (`params.threads`, `variants[1].format`,
/// `harness.min_iters`), else a top-level field. None for the document.
fn removable(path: &str) -> Option<String> {
    let mut parts = path.split('.').filter(|p| !p.is_empty());
    let top = parts.next()?;
    let strip = |p: &str| p.split('[').next().unwrap_or(p).to_owned();
    let sections = ["params", "harness", "budget", "search", "target", "slo"];
    match parts.next() {
        Some(entry) if top.starts_with("variants[") || sections.contains(&top) => {
            Some(format!("{top}.{}", strip(entry)))
        }
        _ => Some(strip(top)).filter(|t| !t.is_empty()),
    }
}

/// Takes `field` (as [`removable`] names it) out of the document; whether
/// it was there.
fn remove(doc: &mut serde_yaml_ng::Value, field: &str) -> bool {
    use serde_yaml_ng::Value;
    let mut node = doc;
    let parts: Vec<&str> = field.split('.').collect();
    let Some((leaf, path)) = parts.split_last() else {
        return false;
    };
    for part in path {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        let Some(next) = node.get_mut(key) else {
            return false;
        };
        node = match (index, next) {
            (Some(i), Value::Sequence(seq)) => match seq.get_mut(i) {
                Some(item) => item,
                None => return false,
            },
            // `variants:` given as one mapping rather than a list.
            (Some(0), other @ Value::Mapping(_)) => other,
            (None, other) => other,
            _ => return false,
        };
    }
    match node {
        // In place: the rest keep their order, and so the order errors are found in.
        Value::Mapping(map) => map.shift_remove(*leaf).is_some(),
        _ => false,
    }
}

/// The checks after deserialization: `when`, placement, the counted
/// expansion, budgets and the search's metrics.
fn check(spec: SweepSpec, source: &str, limits: &Limits) -> Result<ParsedSweep, SpecError> {
    let when_in_params = match &spec.params {
        Space::Kernel(k) => k.when.is_some(),
        Space::Model(m) => m.1.is_some(),
    };
    if when_in_params {
        return Err(SpecError::at(
            source,
            "params.when",
            "when",
            None,
            "`when` belongs in a variant: it says which devices that variant's parameters are for"
                .to_owned(),
        ));
    }
    let conditional = spec.variants.iter().any(|v| match v {
        Space::Kernel(k) => k.when.is_some(),
        Space::Model(m) => m.1.is_some(),
    });
    if conditional && spec.placement == Placement::Any {
        return Err(SpecError::at(
            source,
            "placement",
            "placement",
            Some("any"),
            "a variant with `when` needs placement `each-class` or `all` (it runs where its devices are)"
                .to_owned(),
        ));
    }
    // Grid and random sweeps create every configuration's trials at once,
    // on at least one class: refuse what cannot fit before building anything.
    if !spec.search.is_adaptive() {
        let mut n = count_spaces(&spaces(&spec))?;
        if let Search::Random { samples, .. } = spec.search {
            n = n.min(u64::from(samples));
        }
        if let Some(max) = spec.budget.max_trials {
            n = n.min(u64::from(max / spec.repeats.max(1)));
        }
        let trials = n.checked_mul(u64::from(spec.repeats));
        if trials.is_none_or(|t| t > limits.max_trials) {
            return Err(SpecError::at(
                source,
                "repeats",
                "repeats",
                None,
                format!(
                    "{n} configurations x {} repeats is more than the limit of {} trials per sweep",
                    spec.repeats, limits.max_trials
                ),
            ));
        }
    }
    let mut configs = expand(&spec, source)?;
    if let Search::Random { samples, seed } = spec.search {
        configs = sample(configs, samples as usize, seed);
    }
    if let Some(max) = spec.budget.max_trials {
        if max < spec.repeats {
            return Err(SpecError::at(
                source,
                "budget.max_trials",
                "max_trials",
                None,
                format!(
                    "budget.max_trials = {max} is less than repeats = {}: not one configuration fits",
                    spec.repeats
                ),
            ));
        }
        if !spec.search.is_adaptive() {
            // The first configurations, in grid order, that fit per class.
            configs.truncate((max / spec.repeats) as usize);
        }
    }
    if spec.placement == Placement::All && spec.search.is_adaptive() {
        return Err(SpecError::at(
            source,
            "placement",
            "placement",
            Some("all"),
            format!(
                "placement `all` cannot go with search `{}`, which searches per device class: use `each-class`",
                spec.search.name()
            ),
        ));
    }
    if let Some(goal) = spec.search.goal() {
        for (field, m) in std::iter::once(("objective", goal.objective.metric.as_str())).chain(
            goal.constraints
                .iter()
                .map(|c| ("constraints", c.metric.as_str())),
        ) {
            if !crate::metrics::reported(spec.workload, m) {
                return Err(SpecError::at(
                    source,
                    &format!("search.{field}"),
                    field,
                    Some(m),
                    format!(
                        "workload {} reports no metric `{m}`; it reports: {}",
                        spec.workload.name(),
                        crate::metrics::reported_list(spec.workload).join(", ")
                    ),
                ));
            }
        }
    }
    let (configs, conditions) = configs.into_iter().unzip();
    Ok(ParsedSweep {
        spec,
        configs,
        conditions,
        source: source.to_owned(),
    })
}

/// `n` configurations drawn without replacement from `all`, the same ones for
/// the same seed on every machine (ChaCha8), kept in grid order.
fn sample<T>(all: Vec<T>, n: usize, seed: u64) -> Vec<T> {
    use rand::SeedableRng;
    if n >= all.len() {
        return all;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, all.len(), n).into_vec();
    picked.sort_unstable();
    let mut all: Vec<Option<T>> = all.into_iter().map(Some).collect();
    picked.into_iter().filter_map(|i| all[i].take()).collect()
}
