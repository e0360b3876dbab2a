//! OmniRelay's data plane.
//!
//! The core is sans-IO: codecs, routing, load balancing and policies take bytes and time
//! as inputs and never touch sockets or clocks, so they are tested deterministically. The
//! I/O shell (monoio workers on io_uring, one per core) drives them.
//!
//! This crate depends on `omnirelay-abstractions` only, never on a provider crate.

pub mod admin;
pub mod http1;
pub mod lb;
pub mod proxy;
pub mod router;
pub mod snapshot;
pub mod telemetry;
