//! The kernel side of the control daemon: loading OmniRelay's eBPF programs, attaching
//! them to interfaces, reading their maps, and forwarding their aya-log records to
//! `tracing`.

mod error;
mod log_bridge;
mod xdp_counter;

pub use error::KernelError;
pub use log_bridge::EbpfLogPump;
pub use xdp_counter::{AttachMode, ClassCounters, XdpCounter};

/// The eBPF object built from `ebpf/omnirelay-ebpf` by `build.rs`, embedded at 8-byte
/// alignment as the ELF parser requires.
pub(crate) static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/omnirelay-xdp"));
