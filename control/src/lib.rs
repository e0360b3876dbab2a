//! OmniRelay's control daemon, as a library.
//!
//! The daemon owns everything the kernel runs for OmniRelay: it loads the eBPF programs
//! through aya, attaches them, and reads and writes their maps ([`kernel`]). Config
//! compilation, snapshot signing and publishing join this crate with the control-plane
//! slice.
//!
//! This crate must not depend on the data plane or on any provider crate.

pub mod config;
pub mod daemon;
pub mod kernel;
pub mod snapshot;

/// The example config shipped with the binary (`omnirelay-control example-config`), also
/// what the demo runs on.
pub const EXAMPLE_CONFIG: &str = include_str!("../omnirelay.example.toml");
