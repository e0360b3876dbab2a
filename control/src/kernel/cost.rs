//! `xdp-cost`: nanoseconds per packet of the limiter's pass and drop paths, measured in
//! the kernel with `BPF_PROG_TEST_RUN`, beside a program that only returns `XDP_DROP`
//! (the harness floor). Runs unattached, with maps pinned in a scratch folder.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use omnirelay_ebpf_common::{
    limiter::{Budget, ListenerPolicy, SteerWeights, v4_mapped},
    names::XDP_FLOOR_PROGRAM,
};

use super::{KernelError, KernelLimiter, KernelPlan, LimiterSettings, XDP_OBJECT};

/// One measurement, nanoseconds per packet (the kernel's mean over `repeat` runs).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CostSample {
    /// `xdp_floor`.
    pub floor_ns: f64,
    /// The limiter on a SYN within budget: parse, lookups, bucket update, pass.
    pub pass_ns: f64,
    /// The limiter on a SYN over budget: the same work, then drop.
    pub drop_ns: f64,
    /// The limiter on a frame for no budgeted listener (parse and one lookup miss).
    pub unlisted_ns: f64,
}

const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PORT: u16 = 8080;

fn syn(src: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&DST.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

fn run(program: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, Duration), KernelError> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .map_err(super::load_error(XDP_FLOOR_PROGRAM))?;
    Ok((r.return_value, r.duration))
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Measures once: each program `repeat` times on its frame.
pub fn measure(repeat: u32) -> Result<CostSample, KernelError> {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/omnirelay-cost-{}", std::process::id()));
    let _ = super::remove_pins(&pin_dir);
    let result = measure_in(&pin_dir, repeat);
    let _ = super::remove_pins(&pin_dir);
    result
}

fn measure_in(pin_dir: &std::path::Path, repeat: u32) -> Result<CostSample, KernelError> {
    let mut floor_obj = Ebpf::load(XDP_OBJECT).map_err(|e| KernelError::Object(Box::new(e)))?;
    let floor: &mut Xdp = super::program(&mut floor_obj, XDP_FLOOR_PROGRAM)?;
    floor.load().map_err(super::load_error(XDP_FLOOR_PROGRAM))?;

    let mut limiter = KernelLimiter::start(LimiterSettings::unattached(pin_dir, false))?;
    // Listener 0 on 0.0.0.0: a budget nobody exceeds (pass path); listener 1 on another
    // port: one packet per second (drop path after the first).
    let policy = |id, budget| ListenerPolicy {
        id,
        flags: 0,
        budget,
        stamp: 1,
    };
    limiter.apply(&KernelPlan {
        version: 1,
        listeners: vec![
            (
                v4_mapped([0; 4]),
                PORT,
                policy(0, Budget::new(10_000_000, 1 << 32)),
            ),
            (v4_mapped([0; 4]), PORT + 1, policy(1, Budget::new(1, 1))),
        ],
        names: vec!["pass".into(), "drop".into()],
        allow: vec![],
        deny: vec![],
        overrides: vec![],
        weights: SteerWeights::default(),
        drop_malformed: false,
    })?;
    let src = Ipv4Addr::new(192, 0, 2, 10);
    let (_, floor_d) = run(floor, &syn(src, PORT), repeat)?;
    let (pass_v, pass_d) = limiter.test_run(&syn(src, PORT), repeat)?;
    let (drop_v, drop_d) = limiter.test_run(&syn(src, PORT + 1), repeat)?;
    let (_, unlisted_d) = limiter.test_run(&syn(src, PORT + 2), repeat)?;
    if pass_v != 2 || drop_v != 1 {
        return Err(KernelError::Check(format!(
            "xdp-cost: the limiter did not take the measured paths (verdicts pass={pass_v} \
             drop={drop_v}, expected 2 and 1)"
        )));
    }
    Ok(CostSample {
        floor_ns: ns(floor_d),
        pass_ns: ns(pass_d),
        drop_ns: ns(drop_d),
        unlisted_ns: ns(unlisted_d),
    })
}
