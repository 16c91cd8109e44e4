//! The pre-parse scan: refuses documents nested too deep or using aliases, before the YAML parser sees them.

use super::{SpecError, MAX_NESTING};

/// Refuses, before the YAML parser sees it, a document nested deeper than
/// [`MAX_NESTING`] (deep flow collections cost the parser quadratic time)
/// or using an alias (`*name`: a few aliases of aliases expand a small
/// document into billions of values). A conservative scan: flow brackets
/// outside quotes and comments, block indentation levels, `- ` entries
/// opened on one line, and `*` where a value starts.
pub fn check_nesting(source: &str) -> Result<(), SpecError> {
    let deepest = nesting_depth(source);
    if let Some(line) = deepest.alias_line {
        return Err(SpecError {
            path: String::new(),
            line: Some(line),
            message: "aliases (`*name`) are not accepted in a sweep spec: write the values out, or share them through `params` and `variants`".to_owned(),
            also: Vec::new(),
        });
    }
    if deepest.depth > MAX_NESTING {
        return Err(SpecError {
            path: String::new(),
            line: Some(deepest.line),
            message: format!(
                "the document nests collections more than {MAX_NESTING} deep; a sweep spec needs about 5"
            ),
            also: Vec::new(),
        });
    }
    Ok(())
}

pub(super) struct Deepest {
    pub(super) depth: usize,
    line: usize,
    /// The first line with an alias, if any.
    alias_line: Option<usize>,
}

pub(super) fn nesting_depth(source: &str) -> Deepest {
    let mut deepest = Deepest {
        depth: 0,
        line: 1,
        alias_line: None,
    };
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Quote state carries across lines (a quoted scalar may span lines).
    let mut quote: Option<char> = None;
    for (i, line) in source.lines().enumerate() {
        let mut block = indents.len();
        if flow == 0 && quote.is_none() {
            let body = line.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let indent = line.len() - body.len();
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
            // `- - - x` opens a sequence per dash on one line.
            let dashes = body
                .split(' ')
                .take_while(|t| *t == "-" || t.is_empty())
                .filter(|t| *t == "-")
                .count();
            block = indents.len() + dashes;
        }
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    if q == '\'' && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    // A quote opens a scalar only where one may start (`it's`
                    // in a plain scalar is an apostrophe).
                    '"' | '\'' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-') => {
                        quote = Some(c)
                    }
                    '*' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-')
                        && chars
                            .peek()
                            .is_some_and(|n| n.is_alphanumeric() || "_-".contains(*n)) =>
                    {
                        deepest.alias_line.get_or_insert(i + 1);
                    }
                    '[' | '{' => {
                        flow += 1;
                        if block + flow > deepest.depth {
                            deepest.depth = block + flow;
                            deepest.line = i + 1;
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        if block > deepest.depth {
            deepest.depth = block;
            deepest.line = i + 1;
        }
    }
    deepest
}
