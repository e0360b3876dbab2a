//! OmniRelay's data plane.
//!
//! The core is sans-IO: codecs, routing, load balancing and policies take bytes and time
//! as inputs and never touch sockets or clocks, so they are tested deterministically. The
//! I/O shell (monoio workers on io_uring, one per core) drives them.
//!
//! It depends on the wire contracts (`omnirelay-proto`) and the codec (`omnirelay-http1`),
//! never on the control plane or a provider crate.

pub mod admin;
/// The HTTP/1.1 codec (its own crate, so the fuzzer builds it alone).
pub use omnirelay_http1 as http1;
pub mod lb;
pub mod proxy;
pub mod router;
pub mod snapshot;
pub mod telemetry;
