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
