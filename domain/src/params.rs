//! Trial parameters: a name -> value map, as the sweep spec and the wire carry them.

use chimera_proto::v1 as proto;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One parameter value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A whole number (`threads: 2`).
    Int(i64),
    /// A real number.
    Real(f64),
    /// A flag.
    Flag(bool),
    /// Text (`op: qmatmul`, `shape: "1,4096,4096"`).
    Text(String),
}

/// A trial's configuration.
pub type Params = BTreeMap<String, ParamValue>;

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Real(v) => write!(f, "{v}"),
            ParamValue::Flag(v) => write!(f, "{v}"),
            ParamValue::Text(v) => f.write_str(v),
        }
    }
}

impl From<&ParamValue> for proto::ParamValue {
    fn from(v: &ParamValue) -> Self {
        use proto::param_value::Kind;
        let kind = match v {
            ParamValue::Int(i) => Kind::Int(*i),
            ParamValue::Real(r) => Kind::Real(*r),
            ParamValue::Flag(b) => Kind::Flag(*b),
            ParamValue::Text(s) => Kind::Text(s.clone()),
        };
        proto::ParamValue { kind: Some(kind) }
    }
}

/// A wire parameter had no value set.
#[derive(Debug, thiserror::Error)]
#[error("parameter `{0}` has no value")]
pub struct EmptyParam(pub String);

/// Converts wire parameters to domain parameters; a value with no kind is an error.
pub fn params_from_proto(
    map: &std::collections::HashMap<String, proto::ParamValue>,
) -> Result<Params, EmptyParam> {
    use proto::param_value::Kind;
    map.iter()
        .map(|(k, v)| {
            let value = match &v.kind {
                Some(Kind::Int(i)) => ParamValue::Int(*i),
                Some(Kind::Real(r)) => ParamValue::Real(*r),
                Some(Kind::Flag(b)) => ParamValue::Flag(*b),
                Some(Kind::Text(s)) => ParamValue::Text(s.clone()),
                None => return Err(EmptyParam(k.clone())),
            };
            Ok((k.clone(), value))
        })
        .collect()
}

/// Converts domain parameters to wire parameters.
pub fn params_to_proto(params: &Params) -> std::collections::HashMap<String, proto::ParamValue> {
    params.iter().map(|(k, v)| (k.clone(), v.into())).collect()
}

/// A one-line label of a configuration, parameters in catalogue order
/// (`op=qmatmul format=q4_0 shape=1,4096,4096 threads=2`).
pub fn label(params: &Params) -> String {
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort_by_key(|k| (crate::catalog::param_rank(k), (*k).clone()));
    keys.iter()
        .map(|k| format!("{k}={}", params[*k]))
        .collect::<Vec<_>>()
        .join(" ")
}
