//! What of a failed trial's reason may leave the agent.
//!
//! A reason goes to the controller, where every operator reads it (`chimera
//! sweep status`, results files, reports). It must not map the agent's disk:
//! [`public_reason`] rewrites every absolute path in it, relative to its model
//! directory when it is inside one, otherwise to [`OUTSIDE`]. The full reason
//! stays in the agent's log (the worker logs it before calling this).
//!
//! A file's bytes are kept out of reasons where they are made, not here: the
//! loaders in [`crate::models`] say what they expected of a malformed file and
//! log the parser's own message, which may quote the file, on the agent only.

use super::ModelDirs;
use std::path::{Component, Path};

/// What an absolute path outside every model directory becomes. Not even its
/// file name is kept: a symlink's target may name what it points at
/// (`id_ed25519`, `shadow`).
pub const OUTSIDE: &str = "<path outside the model directories>";

/// `reason` with every absolute path replaced: a path inside a model
/// directory by the path relative to it (`llama/model.gguf`), the directory
/// itself by `<model directory>` (`<model directory N>`, counting from 1 in
/// `--model-dir` order, when there are several), any other by [`OUTSIDE`].
///
/// A path is found in backticks (all of the quoted text, spaces included, as
/// this crate's messages quote paths) or standing alone, starting with `/` at
/// the start of the text or after a space, a quote or an opening bracket, and
/// running to the next space, quote, closing bracket, `,` or `;` (or, when it
/// starts with a model directory, from the end of that directory on).
pub fn public_reason(reason: &str, dirs: &ModelDirs) -> String {
    let mut out = String::with_capacity(reason.len());
    let parts: Vec<&str> = reason.split('`').collect();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('`');
        }
        // An odd part sits between two backticks, unless it is the last one
        // (an unclosed backtick): that is left as text.
        let quoted = i % 2 == 1 && i + 1 < parts.len();
        if quoted && part.starts_with('/') {
            out.push_str(&public_path(part, dirs));
        } else {
            unquoted(part, dirs, &mut out);
        }
    }
    out
}

/// Whether a path may start after `c`.
fn opens(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '(' | '[' | '{' | '<' | '=' | ',')
}

/// Whether `c` ends a path that is not in backticks.
fn closes(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | ']' | '}' | '>' | ',' | ';')
}

/// Copies `text` to `out`, rewriting the absolute paths standing in it.
fn unquoted(text: &str, dirs: &ModelDirs, out: &mut String) {
    let mut i = 0;
    let mut prev: Option<char> = None;
    while let Some(c) = text[i..].chars().next() {
        let starts_path = c == '/' && prev.is_none_or(opens);
        if !starts_path {
            out.push(c);
            prev = Some(c);
            i += c.len_utf8();
            continue;
        }
        let rest = &text[i..];
        // A model directory may hold spaces: scan for the end after it.
        let skip = dirs
            .dirs()
            .iter()
            .filter_map(|d| d.to_str())
            .filter(|d| {
                rest.starts_with(d)
                    && rest[d.len()..]
                        .chars()
                        .next()
                        .is_none_or(|n| n == '/' || closes(n))
            })
            .map(str::len)
            .max()
            .unwrap_or(0);
        let end = skip + rest[skip..].find(closes).unwrap_or(rest.len() - skip);
        let token = &rest[..end];
        // Sentence punctuation after a path is not part of it.
        let path = token.trim_end_matches([':', '.']);
        if path.len() <= 1 {
            // A lone `/` (`tokens / s`) is no path.
            out.push_str(token);
        } else {
            out.push_str(&public_path(path, dirs));
            out.push_str(&token[path.len()..]);
        }
        prev = token.chars().last();
        i += end;
    }
}

/// One absolute path as a reason may show it.
fn public_path(path: &str, dirs: &ModelDirs) -> String {
    let p = Path::new(path);
    let all = dirs.dirs();
    for (n, dir) in all.iter().enumerate() {
        let Ok(rel) = p.strip_prefix(dir) else {
            continue;
        };
        // `dir/../x` is not inside `dir`, whatever it starts with.
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return OUTSIDE.to_owned();
        }
        if rel.as_os_str().is_empty() {
            return if all.len() == 1 {
                "<model directory>".to_owned()
            } else {
                format!("<model directory {}>", n + 1)
            };
        }
        return rel.display().to_string();
    }
    OUTSIDE.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Model directories that need not exist (`ModelDirs::new` checks that
    /// they do, and canonicalizes).
    fn dirs(d: &[&str]) -> ModelDirs {
        ModelDirs {
            dirs: d.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn a_path_inside_a_model_directory_becomes_relative_to_it() {
        let d = dirs(&["/root/secret/models"]);
        let r = public_reason(
            "model file `/root/secret/models/x.gguf`: not a GGUF file",
            &d,
        );
        assert_eq!(r, "model file `x.gguf`: not a GGUF file");
        // Standing alone, with sentence punctuation after it, and nested.
        let r = public_reason(
            "open /root/secret/models/llama/x.gguf: denied. See \"/root/secret/models/y\".",
            &d,
        );
        assert_eq!(r, "open llama/x.gguf: denied. See \"y\".");
        assert!(!r.contains("/root"), "{r}");
    }

    #[test]
    fn a_path_outside_the_model_directories_is_replaced_whole() {
        let d = dirs(&["/root/secret/models"]);
        let quoted = format!("model `link.gguf` resolves to `{OUTSIDE}`, outside");
        for (reason, public) in [
            (
                "model `link.gguf` resolves to `/etc/ssh/id_ed25519`, outside",
                quoted.clone(),
            ),
            (
                "model `link.gguf` resolves to /etc/ssh/id_ed25519, outside",
                format!("model `link.gguf` resolves to {OUTSIDE}, outside"),
            ),
            // A sibling directory is not inside because its name starts alike.
            (
                "model `link.gguf` resolves to `/root/secret/models2/id_ed25519`, outside",
                quoted.clone(),
            ),
            // Nor is a path that climbs out of the directory.
            (
                "model `link.gguf` resolves to `/root/secret/models/../id_ed25519`, outside",
                quoted.clone(),
            ),
        ] {
            let r = public_reason(reason, &d);
            assert_eq!(r, public);
            assert!(!r.contains("id_ed25519") && !r.contains("/root"), "{r}");
        }
    }

    #[test]
    fn model_directories_are_named_by_their_place_in_the_list() {
        let one = dirs(&["/srv/models"]);
        assert_eq!(
            public_reason("not found in the model directories: `/srv/models`", &one),
            "not found in the model directories: `<model directory>`"
        );
        let two = dirs(&["/srv/models", "/data/more models"]);
        assert_eq!(
            public_reason(
                "not found in the model directories: `/srv/models`, `/data/more models`",
                &two
            ),
            "not found in the model directories: `<model directory 1>`, `<model directory 2>`"
        );
        // A directory with a space in it, unquoted.
        assert_eq!(
            public_reason("open /data/more models/x.gguf failed", &two),
            "open x.gguf failed"
        );
    }

    #[test]
    fn text_without_absolute_paths_is_left_alone() {
        let d = dirs(&["/m"]);
        for reason in [
            "model `nope.gguf` not found",
            "3/4 of tokens/s at 1 / 2, see http://example.invalid/x",
            "a stray ` backtick /",
            "",
        ] {
            assert_eq!(public_reason(reason, &d), reason);
        }
        // With no model directory every absolute path is outside.
        assert_eq!(
            public_reason("`/m/x.gguf`", &ModelDirs::default()),
            format!("`{OUTSIDE}`")
        );
    }

    #[test]
    fn a_symlink_escape_refusal_carries_no_absolute_target() {
        let root = tempfile::tempdir().expect("tempdir");
        let inside = root.path().join("models");
        std::fs::create_dir(&inside).expect("mkdir");
        std::fs::write(root.path().join("secret.gguf"), b"outside").expect("write");
        std::os::unix::fs::symlink(root.path().join("secret.gguf"), inside.join("link.gguf"))
            .expect("symlink");
        let d = ModelDirs::new(std::slice::from_ref(&inside)).expect("dirs");
        let model = "link.gguf".parse().expect("model path");
        let full = d.resolve(&model).expect_err("the symlink escapes");
        let real = root.path().canonicalize().expect("canonical");
        assert!(full.contains(&*real.to_string_lossy()), "{full}");
        let public = public_reason(&full, &d);
        assert!(
            public.contains("link.gguf") && public.contains("refused"),
            "{public}"
        );
        assert!(!public.contains(&*real.to_string_lossy()), "{public}");
        assert!(!public.contains("secret.gguf"), "{public}");
        assert!(!public.contains("`/"), "{public}");
    }
}
