//! The parse pipeline: YAML text checked, parsed, counted, expanded and sampled into a [`ParsedSweep`].

use super::expansion::{count_spaces, spaces};
use super::{check_nesting, expand, find_line, Limits, Placement, Search, Space, SpecError};
use super::{readable, SweepSpec, Target};
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
    let spec: SweepSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
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
        // Values buffered by serde (untagged forms) lose their position and
        // report line 1: locate the field in the text instead.
        let line = match line {
            Some(1) if !path.is_empty() && path != "." => {
                let field = path.rsplit('.').next().unwrap_or(&path);
                let field = field.split('[').next().unwrap_or(field);
                find_line(source, field, None).or(line)
            }
            other => other,
        };
        SpecError {
            path,
            line,
            message: readable(&message),
        }
    })?;
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
