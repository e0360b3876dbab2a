//! OmniRelay's contracts: what the control plane and data plane depend on, and what every
//! provider (first-party in `plugins/internal/`, external in `plugins/<provider>/`)
//! implements.
//!
//! - [`error`]: one error type with a stable [`ErrorCode`], a retry hint and the provider's
//!   context, and the one table mapping codes to HTTP and gRPC statuses.
//! - [`policy`]: [`ExecutionPolicy`]: timeout, retries with backoff, jitter and a budget,
//!   and a circuit breaker, wrapped around every provider call.
//! - [`config`], [`store`], [`topology`]: the contracts the control-plane slice uses.
//!
//! This crate has no I/O and no runtime: it depends on nothing heavier than `thiserror`.
//! No provider-specific type may appear here.
#![forbid(unsafe_code)]

pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod policy;
pub mod store;
pub mod topology;

pub use error::{Error, ErrorCode};
pub use policy::ExecutionPolicy;
