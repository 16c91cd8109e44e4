//! Id newtypes. An id is an opaque string on the wire; these keep them apart in code.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

id_newtype!(
    /// A sweep's id: a ULID, so ids sort by submission time.
    SweepId
);
id_newtype!(
    /// A trial's id, unique within its sweep (`t00042`).
    TrialId
);
id_newtype!(
    /// An agent's name, unique in the fleet.
    AgentId
);

impl TrialId {
    /// The id of the `n`-th trial of a sweep.
    pub fn nth(n: usize) -> Self {
        Self(format!("t{n:05}"))
    }
}

/// Most bytes in an id (sweep, trial, agent, operator or device).
pub const MAX_ID_LEN: usize = 64;

/// Checks an id from outside (a request, a certificate, a file): 1 to
/// [`MAX_ID_LEN`] letters, digits, `.`, `_`, `-`, not starting with `.` (so
/// an id is never `..` or a hidden file when it becomes part of a path, and
/// never breaks out of a log line, a Prometheus label or a CSV cell). The
/// error names `field` and quotes the value.
pub fn check_id(field: &str, value: &str) -> Result<(), String> {
    check_chars(
        field,
        value,
        |c| matches!(c, '.' | '_' | '-'),
        "`.`, `_`, `-`",
    )
}

/// Checks a device id (`cpu`, `gpu:0`): the id rule of [`check_id`] with `:`
/// allowed too.
pub fn check_device_id(field: &str, value: &str) -> Result<(), String> {
    check_chars(
        field,
        value,
        |c| matches!(c, '.' | '_' | '-' | ':'),
        "`.`, `_`, `-`, `:`",
    )
}

fn check_chars(
    field: &str,
    value: &str,
    extra: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && !value.starts_with('.')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || extra(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {} is not valid: use 1 to {MAX_ID_LEN} letters, digits and {allowed}, not starting with `.`",
            crate::wire::quote(value)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_names() {
        for ok in ["agent-1", "host.example.com", "01J9Z", "t00042", "a_b"] {
            assert!(check_id("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "a\nb", "é", "a\"}"] {
            let e = check_id("hello.agent_name", bad).unwrap_err();
            assert!(e.starts_with("hello.agent_name "), "{e}");
        }
        assert!(check_id("x", &"a".repeat(MAX_ID_LEN)).is_ok());
        assert!(check_id("x", &"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(check_device_id("d", "gpu:0").is_ok());
        assert!(check_id("d", "gpu:0").is_err());
        let e = check_device_id("hello.devices[0].id", "x\"} 1\nchimera_controller_leader 0")
            .unwrap_err();
        assert!(!e.contains('\n'), "the value is quoted, not raw: {e}");
    }
}
