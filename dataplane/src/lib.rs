//! OmniRelay's data plane.
//!
//! The core is sans-IO: codecs, routing, load balancing and policies take bytes and time
//! as inputs and never touch sockets or clocks, so they are tested deterministically. The
//! I/O shell (monoio workers on io_uring, one per core) drives them.
//!
//! It depends on the wire contracts (`omnirelay-proto`), the codec (`omnirelay-http1`) and
//! the provider contracts (`omnirelay-abstractions`), never on the control plane or a
//! provider crate: providers (such as the topology strategies behind hash-based balancing,
//! [`lb::Strategies`]) are passed in by the binary, whose `main.rs` is the one place that
//! names them. Cargo gives a package's library and binary the same dependencies, so the
//! provider crates are listed in `Cargo.toml` for the binary; `tests/wiring.rs` checks
//! that library code never uses them.

pub mod admin;
pub mod health;
/// The HTTP/1.1 codec (its own crate, so the fuzzer builds it alone).
pub use omnirelay_http1 as http1;
pub mod lb;
pub mod limit;
pub mod proxy;
pub mod router;
pub mod snapshot;
pub mod steering;
pub mod telemetry;
