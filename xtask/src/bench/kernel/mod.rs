//! The kernel scenarios: `xdp-cost` (nanoseconds per packet of the XDP limiter under
//! `BPF_PROG_TEST_RUN`, beside a drop-only floor) and `flood` (a well-behaved client's
//! throughput through the proxy while another namespace floods SYNs, with the XDP limiter,
//! an equivalent iptables hashlimit rule, or no protection).

pub mod cost;
pub mod flood;

/// `xdp-cost`.
pub const XDP_COST: &str = "xdp-cost";
/// `flood`.
pub const FLOOD: &str = "flood";
