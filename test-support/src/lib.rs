//! Fixtures for OmniRelay's kernel-facing tests.
//!
//! - [`netns`]: network namespaces and veth pairs with addresses, torn down by RAII guards
//!   even when a test panics, with names unique per process so tests run in parallel.
//! - [`caps`]: probes of what this host can do (bpf syscall, BTF, io_uring, kTLS, XDP on
//!   veth, network namespaces, qemu). Tests use them to decide whether to run; `cargo xtask
//!   setup` prints them as a table.
//! - [`skip`]: the one way a test says it cannot run here: a `SKIP` line naming what is
//!   missing, also appended to the file named by `OMNIRELAY_SKIP_LOG` so the test runner
//!   can list every skip at the end. A skip is never silent.
//! - [`process`]: child processes killed by PID on drop, temp dirs, ports; [`nginx`]: a
//!   real nginx as a test upstream.
//! - [`pki`]: a test certificate authority issuing server and client certificates.
//! - [`trace`]: captures `tracing` events so tests can assert what was logged.
//!
//! This crate is for tests and tooling only; no production crate may depend on it.

pub mod caps;
pub mod config;
pub mod frames;
pub mod netns;
pub mod nginx;
pub mod pki;
pub mod process;
pub mod skip;
pub mod trace;

pub use caps::Capability;
pub use netns::{NetNs, NetnsError, VethPair};
