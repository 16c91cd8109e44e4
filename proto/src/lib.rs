//! Wire types and service stubs generated from `proto/chimera/v1/*.proto`.
//!
//! This crate holds the generated code and nothing else: domain types and
//! validation live in `chimera-domain` and in the services that receive messages.
#![allow(clippy::all)]

/// Package `chimera.v1`.
pub mod v1 {
    tonic::include_proto!("chimera.v1");
}
