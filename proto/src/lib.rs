//! Wire types and service stubs generated from `proto/chimera/v1/*.proto`.
//!
//! This crate holds the generated code and nothing else: domain types and
//! validation live in `chimera-domain` and in the services that receive messages.
//! The message types (prost) are always here; the gRPC clients and servers
//! (`agent_service_client`, `operator_service_server`, ...) only with the
//! `grpc` feature, so a crate that only converts messages does not link tonic.
#![allow(clippy::all)]

/// Package `chimera.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/chimera.v1.rs"));
}
