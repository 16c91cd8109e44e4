//! Domain types shared by the controller, the agent and the CLI.
//!
//! Architecture invariant: this crate links neither candle nor the store nor any
//! network code. It is pure data and validation: the sweep spec and its expansion,
//! the workload catalogue (ops, formats, block sizes), metric names, device
//! classes, the results file format and the comparison over results.

pub mod attempt;
pub mod capacity;
pub mod catalog;
pub mod compare;
pub mod cost;
pub mod device;
pub mod diff;
pub mod harness;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod models;
pub mod names;
pub mod order;
pub mod params;
pub mod results;
pub mod search;
pub mod serve;
pub mod spec;
pub mod stats;
pub mod telemetry;
pub mod wire;

pub use attempt::{TrialKey, TrialRef};
pub use ids::{AgentId, SweepId, TrialId};
pub use params::{ParamValue, Params};
