//! Looking a user's word up among known names: exactly, else ignoring case
//! where that is unambiguous, else an error that can suggest the closest name.

/// The one of `all` whose `name` is `s`, or, failing that, the one whose name
/// equals `s` ignoring ASCII case (when exactly one does). Otherwise the
/// closest name to suggest, if one is close ([`closest`]).
pub fn pick<T: Copy>(
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, Option<&'static str>> {
    if let Some(&t) = all.iter().find(|&&t| name(t) == s) {
        return Ok(t);
    }
    let folded: Vec<T> = all
        .iter()
        .copied()
        .filter(|&t| name(t).eq_ignore_ascii_case(s))
        .collect();
    match folded.as_slice() {
        [one] => Ok(*one),
        _ => Err(closest(s, all.iter().map(|&t| name(t)))),
    }
}

/// The name nearest to `s` (edit distance, ignoring case) when it is near
/// enough to be a likely typo: at most a third of its length, and 1 for
/// short names.
pub fn closest<'a>(s: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let s = s.to_ascii_lowercase();
    names
        .into_iter()
        .map(|n| (strsim::levenshtein(&s, &n.to_ascii_lowercase()), n))
        .filter(|&(d, n)| d > 0 && d <= (n.len() / 3).max(1))
        .min_by_key(|&(d, n)| (d, n))
        .map(|(_, n)| n)
}

/// `; did you mean `x`?` for a suggestion, or nothing.
pub fn hint(suggestion: Option<&str>) -> String {
    suggestion
        .map(|n| format!("; did you mean `{n}`?"))
        .unwrap_or_default()
}

/// Implements `Deserialize` for a type through its `FromStr` (so a spec's
/// names are read as the command line reads them: case aside, with a
/// suggestion when one is misspelt).
#[macro_export]
macro_rules! deserialize_from_str {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum F {
        Q8,
        Q4,
        Q4k,
    }
    fn name(f: F) -> &'static str {
        match f {
            F::Q8 => "q8_0",
            F::Q4 => "q4_0",
            F::Q4k => "q4k",
        }
    }
    const ALL: [F; 3] = [F::Q8, F::Q4, F::Q4k];

    #[test]
    fn exact_then_case_aside_then_a_suggestion() {
        assert_eq!(pick("q8_0", &ALL, name), Ok(F::Q8));
        assert_eq!(pick("Q8_0", &ALL, name), Ok(F::Q8));
        assert_eq!(pick("Q4K", &ALL, name), Ok(F::Q4k));
        assert_eq!(pick("q8-0", &ALL, name), Err(Some("q8_0")));
        assert_eq!(pick("fp8", &ALL, name), Err(None));
        assert_eq!(hint(Some("q8_0")), "; did you mean `q8_0`?");
        assert_eq!(closest("colour", ["color", "op", "shape"]), Some("color"));
        assert_eq!(closest("xyz", ["op"]), None);
    }
}
