//! Who a caller is and what it may do: the roles of operators, and how an
//! identity is written into a certificate.
//!
//! A certificate names its holder with a URI subject alternative name,
//! `spiffe://chimera/agent/NAME`, `spiffe://chimera/operator/ROLE/NAME` or
//! `spiffe://chimera/controller/NAME` (SPIFFE's shape: one trust domain,
//! `chimera`, a kind and a name). `chimera tls issue` writes it (and the
//! name as the common name too); a bring-your-own PKI adds the same URI SAN.
//! The URI is the only thing read from a certificate: a common name alone
//! proves nothing, so an operator's certificate can never pass as an agent's.

use std::fmt;
use std::str::FromStr;

/// The trust domain of every identity URI.
pub const TRUST_DOMAIN: &str = "chimera";

/// What an operator may do. Each role may do everything the one before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read: get, list and watch sweeps, trials, agents and telemetry.
    Viewer,
    /// Also submit and cancel sweeps.
    Operator,
    /// Also drain agents.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "role {} is not one of viewer, operator, admin",
                    crate::wire::quote(s)
                )
            })
    }
}

/// Who a certificate or a token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An agent, by its name in the fleet.
    Agent(String),
    /// An operator (a person or a CI job) with a role.
    Operator { name: String, role: Role },
    /// A controller (its server certificate).
    Controller(String),
}

impl Identity {
    /// The identity's URI (`spiffe://chimera/agent/NAME`).
    pub fn uri(&self) -> String {
        match self {
            Identity::Agent(n) => format!("spiffe://{TRUST_DOMAIN}/agent/{n}"),
            Identity::Operator { name, role } => {
                format!("spiffe://{TRUST_DOMAIN}/operator/{role}/{name}")
            }
            Identity::Controller(n) => format!("spiffe://{TRUST_DOMAIN}/controller/{n}"),
        }
    }

    /// The identity a URI names; `None` for a URI that is not one of ours
    /// (another trust domain, another shape, a name that is not an id).
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
        let id = match parts.as_slice() {
            ["agent", name] => Identity::Agent((*name).to_owned()),
            ["controller", name] => Identity::Controller((*name).to_owned()),
            ["operator", role, name] => Identity::Operator {
                name: (*name).to_owned(),
                role: role.parse().ok()?,
            },
            _ => return None,
        };
        crate::ids::check_id("name", id.name()).ok()?;
        Some(id)
    }

    /// The name it carries.
    pub fn name(&self) -> &str {
        match self {
            Identity::Agent(n) | Identity::Controller(n) => n,
            Identity::Operator { name, .. } => name,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Agent(n) => write!(f, "agent {n}"),
            Identity::Operator { name, role } => write!(f, "operator {name} ({role})"),
            Identity::Controller(n) => write!(f, "controller {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for id in [
            Identity::Agent("gpu-node-1".into()),
            Identity::Operator {
                name: "ci".into(),
                role: Role::Operator,
            },
            Identity::Controller("c1".into()),
        ] {
            assert_eq!(
                Identity::from_uri(&id.uri()),
                Some(id.clone()),
                "{}",
                id.uri()
            );
        }
        for bad in [
            "spiffe://other/agent/a",
            "spiffe://chimera/agent/a/b",
            "spiffe://chimera/agent/..",
            "spiffe://chimera/operator/root/a",
            "spiffe://chimera/agent/",
            "https://chimera/agent/a",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered_and_parse_by_name() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().unwrap_err().contains("\"root\""));
    }
}
