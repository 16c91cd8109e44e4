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
