//! The kernel side of the control daemon: loading OmniRelay's eBPF programs, attaching
//! them to interfaces, reading their maps, and forwarding their aya-log records to
//! `tracing`.

pub mod cost;
mod error;
mod ids;
mod limiter;
mod log_bridge;
pub mod plan;
mod xdp_counter;

pub use error::KernelError;
pub use ids::{Assigned, ListenerIds};
pub use limiter::{
    CountersReader, GENERATION_GRACE, KernelLimiter, LimiterCounters, LimiterSettings,
    read_pinned_counters, remove_pins,
};
pub use log_bridge::EbpfLogPump;
pub use plan::{KernelPlan, PlanError, plan};
pub use xdp_counter::{AttachMode, ClassCounters, XdpCounter};

/// The eBPF object built from `ebpf/omnirelay-ebpf` by `build.rs`, embedded at 8-byte
/// alignment as the ELF parser requires.
pub(crate) static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/omnirelay-xdp"));

/// The limiter and steering programs, built from `ebpf/omnirelay-ebpf/src/limiter.rs`.
pub(crate) static LIMITER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/omnirelay-limiter"));

/// Program `name` of `ebpf`, as its program type `P` (a build mismatch is an error).
pub(crate) fn program<'a, P>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(KernelError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(load_error(name))
}

/// Maps aya's program error for `program` into [`KernelError::Load`].
pub(crate) fn load_error(
    program: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Load {
        program,
        source: Box::new(source),
    }
}
