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
}

impl SpecError {
    fn render(&self) -> String {
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
