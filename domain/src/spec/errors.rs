//! Why a spec was refused, and where in its text: [`SpecError`] and [`find_line`].

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    /// Dotted path of the offending field (`params.format[1]`); empty for the document.
    pub path: String,
    /// 1-based line in the YAML text, where known.
    pub line: Option<usize>,
    /// What is wrong, naming the value.
    pub message: String,
    /// The errors found after this one, in the same pass (at most
    /// [`MAX_ERRORS`] in all), so an author fixes them together.
    pub also: Vec<SpecError>,
}

/// Most errors one refusal lists.
pub const MAX_ERRORS: usize = 20;

impl SpecError {
    fn render(&self) -> String {
        if self.also.is_empty() {
            return self.render_one();
        }
        let mut out = format!("{} errors:", 1 + self.also.len());
        for e in std::iter::once(self).chain(&self.also) {
            out.push_str("\n  ");
            out.push_str(&e.render_one());
        }
        out
    }

    fn render_one(&self) -> String {
        let mut out = String::new();
        if let Some(line) = self.line {
            out.push_str(&format!("line {line}: "));
        }
        if !self.path.is_empty() && self.path != "." {
            out.push_str(&format!("{}: ", self.path));
        }
        out.push_str(&self.message);
        out
    }

    /// A semantic error located by searching the source for the field.
    pub fn at(source: &str, path: &str, field: &str, value: Option<&str>, message: String) -> Self {
        SpecError {
            path: path.to_owned(),
            line: find_line(source, field, value),
            message,
            also: Vec::new(),
        }
    }
}

/// The first line that sets `field` (and mentions `value`, when given), 1-based.
pub fn find_line(source: &str, field: &str, value: Option<&str>) -> Option<usize> {
    let key = format!("{field}:");
    let hit = |line: &str| {
        let t = line
            .trim_start()
            .trim_start_matches("- ")
            .trim_start_matches('{');
        (t.starts_with(&key)
            || line.contains(&format!(" {key}"))
            || line.contains(&format!("{{{key}")))
            && value.is_none_or(|v| line.contains(v))
    };
    source
        .lines()
        .position(hit)
        .or_else(|| source.lines().position(|l| l.contains(&key)))
        .map(|i| i + 1)
}

/// The line of the field at `path` (`variants[1].threads`): each part's
/// key looked for after the previous one's line (the `[i]`-th list item
/// after a key with an index), so a field set in several places is found
/// where the path says. Falls back to [`find_line`] on the last key.
pub fn locate(source: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let strip = |p: &str| p.split('[').next().unwrap_or(p).to_owned();
    let keys: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let leaf = keys.last().map(|k| strip(k))?;
    let fallback = || find_line(source, &leaf, None);
    let mut at = 0usize;
    for part in &keys {
        let key = format!("{}:", strip(part));
        let found = lines.iter().enumerate().skip(at).find(|(_, l)| {
            let t = l
                .trim_start()
                .trim_start_matches("- ")
                .trim_start_matches('{');
            t.starts_with(&key) || l.contains(&format!(" {key}")) || l.contains(&format!("{{{key}"))
        });
        let Some((i, line)) = found else {
            return fallback();
        };
        at = i;
        let index = part
            .split_once('[')
            .and_then(|(_, r)| r.trim_end_matches(']').parse::<usize>().ok());
        if let Some(n) = index {
            // A flow list on the key's own line: the line is the answer.
            if line.contains('[') {
                continue;
            }
            // The n-th block item (`- `) of the list under the key: items
            // at the first item's indentation, up to the first line that
            // is not deeper than it and is not an item.
            let indent = |l: &str| l.len() - l.trim_start().len();
            let is_item = |l: &str| l.trim_start().starts_with("- ") || l.trim() == "-";
            let body = lines
                .iter()
                .enumerate()
                .skip(i + 1)
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
            let mut items = Vec::new();
            let mut item_indent = None;
            for (j, l) in body {
                match item_indent {
                    None if is_item(l) => item_indent = Some(indent(l)),
                    None => break,
                    Some(_) => {}
                }
                let Some(w) = item_indent else { break };
                if indent(l) < w || (indent(l) == w && !is_item(l)) {
                    break;
                }
                if indent(l) == w {
                    items.push(j);
                }
            }
            match items.get(n) {
                Some(&j) => at = j,
                None => return fallback(),
            }
        }
    }
    Some(at + 1)
}

/// serde's wording made readable for a spec's author: Rust type names become
/// words (`expected u32` → `expected a whole number`), and an unknown field
/// or name gets the closest expected one as a suggestion.
pub fn readable(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, words) in [
        ("expected u8", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a string", "expected text"),
    ] {
        if let Some(rest) = out.strip_suffix(rust) {
            out = format!("{rest}{words}");
            break;
        }
    }
    // `invalid type: string "many", expected ...` → `` `many` is text, expected ...``
    if let Some(rest) = out.strip_prefix("invalid type: string \"") {
        if let Some((value, tail)) = rest.split_once("\", ") {
            out = format!("`{value}` is text, {tail}");
        }
    }
    // `unknown field `colour`, expected one of `op`, ...` and the same for
    // variants: suggest the closest.
    for kind in ["unknown field `", "unknown variant `"] {
        let Some(rest) = out.strip_prefix(kind) else {
            continue;
        };
        let Some((word, expected)) = rest.split_once('`') else {
            continue;
        };
        if out.contains("did you mean") {
            break;
        }
        let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        if let Some(near) = crate::names::closest(word, names) {
            out = format!("{out}{}", crate::names::hint(Some(near)));
        }
        break;
    }
    out
}
