//! The XDP packet counter: loads `xdp_counter` from the embedded object, attaches it to one
//! interface and reads its per-CPU counters. Dropping it detaches the program.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use omnirelay_ebpf_common::{
    PacketCounters, TrafficClass,
    names::{XDP_COUNTER_PROGRAM, XDP_COUNTERS_MAP},
};

use super::{EbpfLogPump, KernelError, XDP_OBJECT};

/// How an XDP program is attached. There is no automatic fallback between modes: a mode
/// the driver cannot do is an error naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Generic XDP, run on the skb after the driver: works on every interface (veth too).
    #[default]
    Generic,
    /// Native XDP in the driver, before any skb exists.
    Native,
    /// Offloaded to the NIC.
    Offload,
}

impl AttachMode {
    pub(crate) fn to_aya(self) -> XdpMode {
        match self {
            AttachMode::Generic => XdpMode::Skb,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Offload => XdpMode::Hardware,
        }
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "generic" | "skb" => Ok(AttachMode::Generic),
            "native" | "driver" => Ok(AttachMode::Native),
            "offload" | "hw" => Ok(AttachMode::Offload),
            other => Err(format!(
                "unknown XDP attach mode {other:?} (expected generic, native or offload)"
            )),
        }
    }
}

/// Counters summed over all CPUs, one entry per [`TrafficClass`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounters([PacketCounters; TrafficClass::COUNT as usize]);

impl ClassCounters {
    /// The counters of one class.
    pub fn get(&self, class: TrafficClass) -> PacketCounters {
        self.0[class.index() as usize]
    }

    /// Packets over all classes.
    pub fn total_packets(&self) -> u64 {
        self.0.iter().map(|c| c.packets).sum()
    }

    /// What was counted since `earlier` (counters only grow, modulo wrapping).
    pub fn since(&self, earlier: &ClassCounters) -> ClassCounters {
        let mut out = ClassCounters::default();
        for (i, slot) in out.0.iter_mut().enumerate() {
            slot.packets = self.0[i].packets.wrapping_sub(earlier.0[i].packets);
            slot.bytes = self.0[i].bytes.wrapping_sub(earlier.0[i].bytes);
        }
        out
    }
}

/// The XDP counter program, loaded and attached to one interface.
pub struct XdpCounter {
    interface: String,
    mode: AttachMode,
    counters: PerCpuArray<MapData, PacketCounters>,
    // Field order matters for drop: stop the log pump before the object (and its links)
    // goes away.
    _log: EbpfLogPump,
    _ebpf: Ebpf,
}

impl std::fmt::Debug for XdpCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpCounter")
            .field("interface", &self.interface)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl XdpCounter {
    /// Loads the program and attaches it to `interface` (looked up in the calling thread's
    /// network namespace) in `mode`.
    pub fn attach(interface: &str, mode: AttachMode) -> Result<Self, KernelError> {
        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| KernelError::Object(Box::new(e)))?;
        let log = EbpfLogPump::start(&mut ebpf, XDP_COUNTER_PROGRAM)?;
        let program: &mut Xdp = super::program(&mut ebpf, XDP_COUNTER_PROGRAM)?;
        program
            .load()
            .map_err(super::load_error(XDP_COUNTER_PROGRAM))?;
        program
            .attach(interface, mode.to_aya())
            .map_err(|source| KernelError::Attach {
                program: XDP_COUNTER_PROGRAM,
                interface: interface.to_owned(),
                mode,
                source: Box::new(source),
            })?;
        let map = ebpf
            .take_map(XDP_COUNTERS_MAP)
            .ok_or(KernelError::Missing {
                kind: "map",
                name: XDP_COUNTERS_MAP,
            })?;
        let counters = PerCpuArray::try_from(map).map_err(|source| KernelError::Map {
            map: XDP_COUNTERS_MAP,
            source: Box::new(source),
        })?;
        tracing::info!(
            program = XDP_COUNTER_PROGRAM,
            interface,
            mode = %mode,
            "XDP program attached"
        );
        Ok(XdpCounter {
            interface: interface.to_owned(),
            mode,
            counters,
            _log: log,
            _ebpf: ebpf,
        })
    }

    /// The interface the program is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The mode it was attached in.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Reads the counters, summed over CPUs.
    pub fn read(&self) -> Result<ClassCounters, KernelError> {
        let mut out = ClassCounters::default();
        for class in TrafficClass::ALL {
            let per_cpu =
                self.counters
                    .get(&class.index(), 0)
                    .map_err(|source| KernelError::Map {
                        map: XDP_COUNTERS_MAP,
                        source: Box::new(source),
                    })?;
            let slot = &mut out.0[class.index() as usize];
            for cpu in per_cpu.iter() {
                slot.accumulate(cpu);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_mode_parses_operator_spellings_and_rejects_others() {
        assert_eq!("generic".parse(), Ok(AttachMode::Generic));
        assert_eq!("skb".parse(), Ok(AttachMode::Generic));
        assert_eq!("native".parse(), Ok(AttachMode::Native));
        assert_eq!("offload".parse(), Ok(AttachMode::Offload));
        let err = "fast".parse::<AttachMode>().unwrap_err();
        assert!(err.contains("\"fast\""), "{err}");
    }

    #[test]
    fn since_subtracts_per_class_with_wrapping() {
        let mut a = ClassCounters::default();
        let mut b = ClassCounters::default();
        a.0[0] = PacketCounters {
            packets: 5,
            bytes: 500,
        };
        b.0[0] = PacketCounters {
            packets: 12,
            bytes: 1700,
        };
        b.0[1] = PacketCounters {
            packets: 1,
            bytes: 60,
        };
        let d = b.since(&a);
        assert_eq!(d.get(TrafficClass::Ipv4).packets, 7);
        assert_eq!(d.get(TrafficClass::Ipv4).bytes, 1200);
        assert_eq!(d.get(TrafficClass::Ipv6).packets, 1);
        assert_eq!(d.total_packets(), 8);
    }

    #[test]
    fn embedded_object_contains_the_program_and_map() {
        // Parsing needs no privileges: proves build.rs embedded a real eBPF ELF.
        let obj = aya_obj::Object::parse(XDP_OBJECT).expect("valid eBPF ELF");
        assert!(obj.programs.contains_key(XDP_COUNTER_PROGRAM));
        assert!(obj.maps.contains_key(XDP_COUNTERS_MAP));
    }
}
