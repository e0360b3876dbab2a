//! The kernel limiter as the control daemon runs it: loads `xdp_limiter` and
//! `steer_reuseport` with their maps pinned under the pin folder, attaches or re-links the
//! XDP program on each configured interface, and writes each snapshot's [`KernelPlan`]
//! as a new map generation.
//!
//! Pin layout (`pin_dir`, default `/sys/fs/bpf/omnirelay`):
//! - `maps/OR_*`: every map. A restarted daemon reuses them, so buckets, counters and the
//!   active generation survive; a pinned map whose type, key, value, size or flags differ
//!   from the embedded object's is removed and created anew (logged).
//! - `links/xdp-<interface>`: the XDP link. While it is pinned the program stays attached
//!   with no process holding it; a new daemon replaces the program inside the existing link
//!   with `BPF_LINK_UPDATE`, so there is no moment without a program.
//! - `steer_reuseport`: the steering program, which data planes attach to their
//!   `SO_REUSEPORT` groups.

use std::{
    collections::HashSet,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapInfo, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{
        SkReuseport, Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use omnirelay_ebpf_common::{
    limiter::{
        ACTIVE_DROP_MALFORMED, ACTIVE_GENERATION, ACTIVE_HAS_ALLOW, ACTIVE_HAS_DENY,
        ACTIVE_HAS_OVERRIDES, Active, COUNTER_SLOTS, ListenerKey, ListenerPolicy, NOT_BUDGETED,
        OVERRIDE_KEY_HEAD_BITS, OverrideEntry, OverrideKey, PORT_ANY, PORT_ANY_V4, PORT_LOOKUP,
        PORTS_PER_GENERATION, PREFIX_KEY_HEAD_BITS, PortEntry, PrefixEntry, PrefixKey, Reason,
        SteerWeights, counter_index, v4_mapped,
    },
    names::{
        ACTIVE_MAP, ALLOW_MAP, CLOCK_PROBE_PROGRAM, DENY_MAP, LIMITER_COUNTERS_MAP, LISTENERS_MAP,
        OVERRIDES_MAP, PORTS_MAP, STEER_PROGRAM, STEER_WEIGHTS_MAP, XDP_LIMITER_PROGRAM,
    },
};

use super::{
    AttachMode, EbpfLogPump, KernelError, LIMITER_OBJECT,
    ids::{Assigned, ListenerIds},
    load_error,
    plan::KernelPlan,
};

/// How long the daemon waits after flipping the generation before it deletes the old one.
/// An XDP or reuseport program run takes well under a microsecond and runs inside an RCU
/// read-side section; 10 ms is four orders of magnitude of margin.
pub const GENERATION_GRACE: Duration = Duration::from_millis(10);

/// Where and how the kernel programs are loaded.
#[derive(Clone, Debug)]
pub struct LimiterSettings {
    /// Interfaces the XDP limiter attaches to (may be empty).
    pub interfaces: Vec<String>,
    /// XDP attach mode. No fallback: an interface that cannot do it is an error.
    pub mode: AttachMode,
    /// bpffs folder for maps, links and the steering program.
    pub pin_dir: PathBuf,
    /// Load and pin the steering program.
    pub steering: bool,
}

impl LimiterSettings {
    /// Programs loaded and maps pinned under `pin_dir`, attached to no interface: for
    /// `BPF_PROG_TEST_RUN` (the cost bench, the verdict tests) and steering alone.
    pub fn unattached(pin_dir: &std::path::Path, steering: bool) -> Self {
        LimiterSettings {
            interfaces: Vec::new(),
            mode: AttachMode::Generic,
            pin_dir: pin_dir.to_path_buf(),
            steering,
        }
    }
}

/// Packets counted by the limiter, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimiterCounters {
    /// Per slot (0: no budgeted listener; `id + 1`: listener `id`), per [`Reason`].
    pub slots: Vec<[u64; Reason::COUNT as usize]>,
}

impl LimiterCounters {
    /// The count for a slot and reason.
    pub fn get(&self, slot: usize, reason: Reason) -> u64 {
        self.slots.get(slot).map_or(0, |s| s[reason as usize])
    }

    /// The count for a reason over every slot.
    pub fn total(&self, reason: Reason) -> u64 {
        self.slots.iter().map(|s| s[reason as usize]).sum()
    }
}

/// The loaded limiter. Dropping it leaves everything attached and pinned (enforcement
/// outlives the daemon); [`remove_pins`] takes it all down.
pub struct KernelLimiter {
    settings: LimiterSettings,
    ebpf: Ebpf,
    /// Which listener holds which id (counter slot, bucket key), kept across plans.
    ids: ListenerIds,
    /// Version of the last plan written (None before one was).
    applied: Option<u64>,
    _log: Option<EbpfLogPump>,
}

impl std::fmt::Debug for KernelLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map {
        map,
        source: Box::new(source),
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> KernelError {
    move |source| KernelError::Pin { what, source }
}

impl KernelLimiter {
    /// Loads the programs (reusing pinned maps of the same layout), attaches or re-links
    /// the XDP program on every interface, and pins the steering program.
    pub fn start(settings: LimiterSettings) -> Result<Self, KernelError> {
        Self::start_with(settings, None)
    }

    /// [`Self::start`], with `initial` written into the maps before anything is attached:
    /// the first packet the new program sees is judged by that plan, not by empty maps
    /// (which matters when the maps were recreated, on first start or after a layout
    /// change, and the program replaces a running one). A plan that cannot be written is
    /// logged and the maps stay as they were, as with [`Self::apply`];
    /// [`Self::applied_version`] tells.
    pub fn start_with(
        settings: LimiterSettings,
        initial: Option<&KernelPlan>,
    ) -> Result<Self, KernelError> {
        ensure_bpffs(&settings.pin_dir)?;
        let maps_dir = settings.pin_dir.join("maps");
        let links_dir = settings.pin_dir.join("links");
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        reconcile_pinned_maps(&maps_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(LIMITER_OBJECT)
            .map_err(|e| KernelError::Object(Box::new(e)))?;
        init_active(&mut ebpf)?;
        // Reused maps: the listeners keep the ids the previous daemon gave them, and ids
        // with counts were held (they are not handed out as never held).
        let counted = read_counters(map_of(&ebpf, LIMITER_COUNTERS_MAP)?)?
            .slots
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, row)| row.iter().any(|n| *n != 0))
            .map(|(slot, _)| slot as u32 - 1)
            .collect::<Vec<_>>();
        let ids = ListenerIds::recovered(listeners_in_force(&ebpf)?, counted);
        let log = match EbpfLogPump::start(&mut ebpf, STEER_PROGRAM) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "eBPF log records will not reach the daemon log");
                None
            }
        };
        let mut limiter = KernelLimiter {
            settings,
            ebpf,
            ids,
            applied: None,
            _log: log,
        };
        if let Some(plan) = initial
            && let Err(e) = limiter.apply(plan)
        {
            tracing::error!(version = plan.version, error = %e, "writing the kernel maps failed; attaching with the maps as they were");
        }
        let (ebpf, settings) = (&mut limiter.ebpf, &limiter.settings);
        // Loaded even with no interface: `test_run` and the cost bench use it unattached.
        let program: &mut Xdp = super::program(ebpf, XDP_LIMITER_PROGRAM)?;
        program.load().map_err(load_error(XDP_LIMITER_PROGRAM))?;
        for interface in &settings.interfaces {
            attach_or_relink(program, interface, settings.mode, &links_dir)?;
        }
        if settings.steering {
            let program: &mut SkReuseport = super::program(ebpf, STEER_PROGRAM)?;
            program.load().map_err(load_error(STEER_PROGRAM))?;
            let pin = settings.pin_dir.join(STEER_PROGRAM);
            // Replace the pin: data planes started from now on attach this version; groups
            // that attached the old one keep it until they restart.
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", pin.display()))(e)),
            }
            program.pin(&pin).map_err(|e| KernelError::Pin {
                what: format!("pinning {}", pin.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
            tracing::info!(pin = %pin.display(), "steering program pinned for the data planes");
        }
        Ok(limiter)
    }

    /// Version of the last plan written into the maps (None before one was).
    pub fn applied_version(&self) -> Option<u64> {
        self.applied
    }

    /// Listener names by id (the counters' slot less one) of the plan in force; empty
    /// where no listener holds the id.
    pub fn listener_names(&self) -> Vec<String> {
        self.ids.names()
    }

    /// Writes `plan` as the next generation and makes it active: the programs see either
    /// the previous set or this one, never a mix.
    ///
    /// The plan's listener ids (positions in its budget list) are renumbered first, so
    /// that a listener keeps its counters and buckets when the list is reordered or
    /// shortened (see [`ListenerIds`]).
    pub fn apply(&mut self, plan: &KernelPlan) -> Result<(), KernelError> {
        self.apply_with(plan, |_| {})
    }

    /// [`apply`](Self::apply), calling `switched` with the listener names by id the moment
    /// the programs start reading the new generation (before the grace period and the
    /// clearing of the old one): what labels the counters by listener follows it there.
    /// An error means the programs still read the previous generation and `switched` was
    /// not called.
    pub fn apply_with(
        &mut self,
        plan: &KernelPlan,
        switched: impl FnOnce(&[String]),
    ) -> Result<(), KernelError> {
        let Assigned {
            plan,
            fresh,
            next: ids,
        } = self
            .ids
            .assign(plan)
            .map_err(|e| KernelError::Check(e.to_string()))?;
        let plan = &plan;
        let old = self.active()?.word & ACTIVE_GENERATION;
        let new = old ^ 1;
        // A previous apply may have died half-way: start the new generation from empty.
        self.clear_generation(new)?;
        self.write_generation(new, plan)?;
        // An id given to another listener starts its counts from zero (no packet is
        // counted under it until the switch below).
        self.zero_counters(&fresh)?;
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        let word = new
            | flag(plan.drop_malformed, ACTIVE_DROP_MALFORMED)
            | flag(!plan.deny.is_empty(), ACTIVE_HAS_DENY)
            | flag(!plan.allow.is_empty(), ACTIVE_HAS_ALLOW)
            | flag(!plan.overrides.is_empty(), ACTIVE_HAS_OVERRIDES);
        let current = self.active()?;
        write_active(&mut self.ebpf, Active { word, ..current })?;
        self.ids = ids;
        self.applied = Some(plan.version);
        switched(&plan.names);
        std::thread::sleep(GENERATION_GRACE);
        // The plan is in force from the switch on: a leftover old generation is only
        // garbage, which the next apply clears before writing into it.
        if let Err(e) = self.clear_generation(old) {
            tracing::warn!(version = plan.version, generation = old, error = %e, "clearing the previous generation failed; the next update clears it");
        }
        tracing::info!(
            version = plan.version,
            generation = new,
            listeners = plan.listeners.len(),
            allow = plan.allow.len(),
            deny = plan.deny.len(),
            overrides = plan.overrides.len(),
            "kernel maps updated"
        );
        Ok(())
    }

    fn active(&self) -> Result<Active, KernelError> {
        read_active(&self.ebpf)
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, KernelError> {
        map_of(&self.ebpf, name)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, KernelError> {
        map_of_mut(&mut self.ebpf, name)
    }

    fn write_generation(&mut self, generation: u32, plan: &KernelPlan) -> Result<(), KernelError> {
        let gen_bytes = generation.to_be_bytes();
        let stamp = PrefixEntry {
            stamp: plan.version,
        };
        {
            let mut m: HashMap<&mut MapData, ListenerKey, ListenerPolicy> =
                HashMap::try_from(self.map_mut(LISTENERS_MAP)?).map_err(map_err(LISTENERS_MAP))?;
            for (addr, port, policy) in &plan.listeners {
                let key = ListenerKey {
                    generation,
                    addr: *addr,
                    port: *port,
                    pad: 0,
                };
                m.insert(key, *policy, 0).map_err(map_err(LISTENERS_MAP))?;
            }
        }
        {
            let mut ports: Array<&mut MapData, PortEntry> =
                Array::try_from(self.map_mut(PORTS_MAP)?).map_err(map_err(PORTS_MAP))?;
            for (port, entry) in port_entries(plan) {
                ports
                    .set(
                        generation * PORTS_PER_GENERATION + u32::from(port),
                        entry,
                        0,
                    )
                    .map_err(map_err(PORTS_MAP))?;
            }
        }
        for (name, list) in [(ALLOW_MAP, &plan.allow), (DENY_MAP, &plan.deny)] {
            let mut m: LpmTrie<&mut MapData, PrefixKey, PrefixEntry> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (addr, len) in list {
                let key = Key::new(
                    PREFIX_KEY_HEAD_BITS + len,
                    PrefixKey {
                        generation: gen_bytes,
                        addr: *addr,
                    },
                );
                m.insert(&key, stamp, 0).map_err(map_err(name))?;
            }
        }
        {
            let mut m: LpmTrie<&mut MapData, OverrideKey, OverrideEntry> =
                LpmTrie::try_from(self.map_mut(OVERRIDES_MAP)?).map_err(map_err(OVERRIDES_MAP))?;
            for (listener, addr, len, budget) in &plan.overrides {
                let key = Key::new(
                    OVERRIDE_KEY_HEAD_BITS + len,
                    OverrideKey {
                        generation: gen_bytes,
                        listener: listener.to_be_bytes(),
                        addr: *addr,
                    },
                );
                let entry = OverrideEntry {
                    budget: *budget,
                    stamp: plan.version,
                };
                m.insert(&key, entry, 0).map_err(map_err(OVERRIDES_MAP))?;
            }
        }
        let mut w: Array<&mut MapData, SteerWeights> =
            Array::try_from(self.map_mut(STEER_WEIGHTS_MAP)?)
                .map_err(map_err(STEER_WEIGHTS_MAP))?;
        w.set(generation, plan.weights, 0)
            .map_err(map_err(STEER_WEIGHTS_MAP))?;
        Ok(())
    }

    /// Deletes every configuration entry of one generation.
    /// Sets the counters of listener ids `ids` to zero on every CPU.
    fn zero_counters(&mut self, ids: &[u32]) -> Result<(), KernelError> {
        if ids.is_empty() {
            return Ok(());
        }
        let system = |what| move |source| KernelError::System { what, source };
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .map_err(system("counting the possible CPUs"))?;
        let mut counters: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut(LIMITER_COUNTERS_MAP)?)
                .map_err(map_err(LIMITER_COUNTERS_MAP))?;
        for &id in ids {
            for reason in Reason::ALL {
                let zeros = PerCpuValues::try_from(vec![0u64; cpus])
                    .map_err(system("one zero per possible CPU"))?;
                counters
                    .set(counter_index(id + 1, reason), zeros, 0)
                    .map_err(map_err(LIMITER_COUNTERS_MAP))?;
            }
        }
        Ok(())
    }

    fn clear_generation(&mut self, generation: u32) -> Result<(), KernelError> {
        let gen_bytes = generation.to_be_bytes();
        {
            let mut m: HashMap<&mut MapData, ListenerKey, ListenerPolicy> =
                HashMap::try_from(self.map_mut(LISTENERS_MAP)?).map_err(map_err(LISTENERS_MAP))?;
            let stale: Vec<ListenerKey> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.generation == generation)
                .collect();
            for k in &stale {
                m.remove(k).map_err(map_err(LISTENERS_MAP))?;
            }
            // The port array entries of this generation are exactly the ports of its
            // listener keys (written after them, cleared with them).
            let mut ports: Array<&mut MapData, PortEntry> =
                Array::try_from(self.map_mut(PORTS_MAP)?).map_err(map_err(PORTS_MAP))?;
            for k in &stale {
                ports
                    .set(
                        generation * PORTS_PER_GENERATION + u32::from(k.port),
                        PortEntry::default(),
                        0,
                    )
                    .map_err(map_err(PORTS_MAP))?;
            }
        }
        for name in [ALLOW_MAP, DENY_MAP] {
            clear_trie::<PrefixKey, PrefixEntry>(self.map_mut(name)?, name, |k| {
                k.generation == gen_bytes
            })?;
        }
        clear_trie::<OverrideKey, OverrideEntry>(self.map_mut(OVERRIDES_MAP)?, OVERRIDES_MAP, |k| {
            k.generation == gen_bytes
        })
    }

    /// Runs the XDP program on one frame `repeat` times in the kernel (`BPF_PROG_TEST_RUN`),
    /// with the live maps. Returns the verdict (`XDP_PASS` = 2, `XDP_DROP` = 1) and the
    /// kernel's mean time per run.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), KernelError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let program: &mut Xdp = super::program(&mut self.ebpf, XDP_LIMITER_PROGRAM)?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        };
        let r = program
            .test_run(opts)
            .map_err(load_error(XDP_LIMITER_PROGRAM))?;
        Ok((r.return_value, r.duration))
    }

    /// Reads the per-CPU counters, summed.
    pub fn counters(&self) -> Result<LimiterCounters, KernelError> {
        read_counters(self.map(LIMITER_COUNTERS_MAP)?)
    }

    /// A second handle on the counters map, read without the limiter: a `/metrics`
    /// scrape then never waits for a map update, nor an update for a scrape.
    pub fn counters_reader(&self) -> Result<CountersReader, KernelError> {
        let aya::maps::Map::PerCpuArray(data) = self.map(LIMITER_COUNTERS_MAP)? else {
            return Err(KernelError::Missing {
                kind: "per-CPU array map",
                name: LIMITER_COUNTERS_MAP,
            });
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io_err(format!(
                "duplicating the {LIMITER_COUNTERS_MAP} map fd"
            )))?;
        let data = MapData::from_fd(fd).map_err(map_err(LIMITER_COUNTERS_MAP))?;
        Ok(CountersReader(aya::maps::Map::PerCpuArray(data)))
    }
}

/// The limiter's counters map on its own descriptor (see [`KernelLimiter::counters_reader`]).
#[derive(Debug)]
pub struct CountersReader(aya::maps::Map);

impl CountersReader {
    /// Reads the per-CPU counters, summed.
    pub fn read(&self) -> Result<LimiterCounters, KernelError> {
        read_counters(&self.0)
    }
}

/// Map `name` of `ebpf` (missing only with a mismatched build).
fn map_of<'a>(ebpf: &'a aya::Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, KernelError> {
    ebpf.map(name)
        .ok_or(KernelError::Missing { kind: "map", name })
}

fn map_of_mut<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, KernelError> {
    ebpf.map_mut(name)
        .ok_or(KernelError::Missing { kind: "map", name })
}

fn read_active(ebpf: &aya::Ebpf) -> Result<Active, KernelError> {
    let active: Array<&MapData, Active> =
        Array::try_from(map_of(ebpf, ACTIVE_MAP)?).map_err(map_err(ACTIVE_MAP))?;
    active.get(&0, 0).map_err(map_err(ACTIVE_MAP))
}

fn write_active(ebpf: &mut aya::Ebpf, value: Active) -> Result<(), KernelError> {
    let mut active: Array<&mut MapData, Active> =
        Array::try_from(map_of_mut(ebpf, ACTIVE_MAP)?).map_err(map_err(ACTIVE_MAP))?;
    active.set(0, value, 0).map_err(map_err(ACTIVE_MAP))
}

/// Fills in the clock scale and a random bucket hash seed unless the (pinned) map already
/// has them, before any program is attached. Pins do not outlive a reboot, so a tick length
/// found there was measured on this kernel: a restarted daemon skips the 100 ms probe. The
/// generation word is left as found: a restarted daemon keeps enforcing the set it left
/// active.
fn init_active(ebpf: &mut aya::Ebpf) -> Result<(), KernelError> {
    let mut active = read_active(ebpf)?;
    if active.tick_ns == 0 {
        active.tick_ns = tick_ns(ebpf)?;
    }
    if active.seed == 0 {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| {
            KernelError::Check(format!("no random bytes for the bucket hash seed: {e}"))
        })?;
        active.seed = u64::from_ne_bytes(bytes) | 1;
    }
    write_active(ebpf, active)
}

/// The kernel's tick length in nanoseconds, from two runs of the clock probe program
/// (jiffies and the coarse clock, which advance together at each tick) at least
/// [`TICK_PROBE_WINDOW`] apart, rounded to the nearest standard `CONFIG_HZ` when one is
/// within 5%.
fn tick_ns(ebpf: &mut aya::Ebpf) -> Result<u32, KernelError> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let program: &mut Xdp = super::program(ebpf, CLOCK_PROBE_PROGRAM)?;
    program.load().map_err(load_error(CLOCK_PROBE_PROGRAM))?;
    let sample = || -> Result<(u64, u64), KernelError> {
        let frame = [0u8; 64];
        let mut out = [0u8; 64 + 256];
        program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .map_err(load_error(CLOCK_PROBE_PROGRAM))?;
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&out[at..at + 8]);
            u64::from_ne_bytes(b)
        };
        Ok((word(0), word(8)))
    };
    let (j0, ns0) = sample()?;
    std::thread::sleep(TICK_PROBE_WINDOW);
    let (j1, ns1) = sample()?;
    tick_from_samples(j1.wrapping_sub(j0), ns1.wrapping_sub(ns0)).ok_or_else(|| {
        KernelError::Check(format!(
            "the kernel clock probe saw {} ticks in {} ns; cannot derive the tick length",
            j1.wrapping_sub(j0),
            ns1.wrapping_sub(ns0)
        ))
    })
}

/// How long the tick probe waits between its two samples: 10 ticks at `HZ=100`.
const TICK_PROBE_WINDOW: Duration = Duration::from_millis(100);

/// Nanoseconds per tick from a number of ticks and the coarse clock's advance over them.
fn tick_from_samples(ticks: u64, ns: u64) -> Option<u32> {
    if ticks == 0 || ns == 0 {
        return None;
    }
    let measured = ns / ticks;
    let snapped = [100u64, 250, 300, 1000, 1024, 48, 24]
        .iter()
        .map(|hz| 1_000_000_000 / hz)
        .find(|t| measured.abs_diff(*t) * 20 <= *t);
    u32::try_from(snapped.unwrap_or(measured)).ok()
}

/// Deletes every key of an LPM trie for which `stale` holds.
fn clear_trie<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::Map,
    name: &'static str,
    stale: impl Fn(&K) -> bool,
) -> Result<(), KernelError> {
    let mut m: LpmTrie<&mut MapData, K, V> = LpmTrie::try_from(map).map_err(map_err(name))?;
    let keys: Vec<Key<K>> = m
        .keys()
        .filter_map(Result::ok)
        .filter(|k| stale(&k.data()))
        .collect();
    for k in keys {
        m.remove(&k).map_err(map_err(name))?;
    }
    Ok(())
}

/// The port array entries of a plan: a port with one wildcard listener carries its
/// policy inline; any other budgeted port sends the program to the hash map.
fn port_entries(plan: &KernelPlan) -> Vec<(u16, PortEntry)> {
    type Listener = ([u8; 16], u16, ListenerPolicy);
    let mut by_port: std::collections::BTreeMap<u16, Vec<&Listener>> =
        std::collections::BTreeMap::new();
    for l in &plan.listeners {
        by_port.entry(l.1).or_default().push(l);
    }
    by_port
        .into_iter()
        .map(|(port, ls)| {
            let entry = match ls.as_slice() {
                [(addr, _, policy)] if *addr == [0; 16] => PortEntry {
                    kind: PORT_ANY,
                    pad: 0,
                    policy: *policy,
                },
                [(addr, _, policy)] if *addr == v4_mapped([0; 4]) => PortEntry {
                    kind: PORT_ANY_V4,
                    pad: 0,
                    policy: *policy,
                },
                _ => PortEntry {
                    kind: PORT_LOOKUP,
                    ..PortEntry::default()
                },
            };
            (port, entry)
        })
        .collect()
}

/// The budgeted listeners of the generation in force in reused maps: (id, address, port).
fn listeners_in_force(ebpf: &Ebpf) -> Result<Vec<(u32, [u8; 16], u16)>, KernelError> {
    let generation = read_active(ebpf)?.word & ACTIVE_GENERATION;
    let m: HashMap<&MapData, ListenerKey, ListenerPolicy> =
        HashMap::try_from(map_of(ebpf, LISTENERS_MAP)?).map_err(map_err(LISTENERS_MAP))?;
    Ok(m.iter()
        .filter_map(Result::ok)
        .filter(|(k, p)| k.generation == generation && p.flags & NOT_BUDGETED == 0)
        .map(|(k, p)| (p.id, k.addr, k.port))
        .collect())
}

/// Reads the limiter's counters from a map handle (also used on a pinned map by tools).
pub fn read_counters(map: &aya::maps::Map) -> Result<LimiterCounters, KernelError> {
    let counters: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(map_err(LIMITER_COUNTERS_MAP))?;
    let mut out = LimiterCounters {
        slots: vec![[0; Reason::COUNT as usize]; COUNTER_SLOTS as usize],
    };
    for (slot, row) in out.slots.iter_mut().enumerate() {
        for reason in Reason::ALL {
            let per_cpu = counters
                .get(&counter_index(slot as u32, reason), 0)
                .map_err(map_err(LIMITER_COUNTERS_MAP))?;
            row[reason as usize] = per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        }
    }
    Ok(out)
}

/// Reads the counters of a running limiter through its pinned map (no daemon needed).
pub fn read_pinned_counters(pin_dir: &Path) -> Result<LimiterCounters, KernelError> {
    let path = pin_dir.join("maps").join(LIMITER_COUNTERS_MAP);
    let data = MapData::from_pin(&path).map_err(map_err(LIMITER_COUNTERS_MAP))?;
    let map = aya::maps::Map::PerCpuArray(data);
    read_counters(&map)
}

/// Puts `program` on `interface`: inside the pinned link if there is one (atomic
/// replacement, no detach gap), else as a new link that is then pinned.
fn attach_or_relink(
    program: &mut Xdp,
    interface: &str,
    mode: AttachMode,
    links_dir: &Path,
) -> Result<(), KernelError> {
    let pin = links_dir.join(format!("xdp-{interface}"));
    if pin.exists() {
        let relinked = PinnedLink::from_pin(&pin)
            .map_err(|e| e.to_string())
            .and_then(|p| XdpLink::try_from(FdLink::from(p)).map_err(|e| e.to_string()))
            .and_then(|link| program.attach_to_link(link).map_err(|e| e.to_string()));
        match relinked {
            Ok(id) => {
                // The program's link list owns the fd now; forget it so the link is not
                // detached when this process exits (the pin keeps it alive).
                let link = program
                    .take_link(id)
                    .map_err(load_error(XDP_LIMITER_PROGRAM))?;
                std::mem::forget(link);
                tracing::info!(
                    program = XDP_LIMITER_PROGRAM,
                    interface,
                    pin = %pin.display(),
                    "XDP program replaced inside the pinned link (no detach gap)"
                );
                return Ok(());
            }
            Err(why) => {
                // The pinned link is dead (its interface was deleted) or foreign: start over.
                tracing::warn!(interface, pin = %pin.display(), %why, "stale XDP link pin replaced");
                let _ = std::fs::remove_file(&pin);
            }
        }
    }
    let id = program
        .attach(interface, mode.to_aya())
        .map_err(|source| KernelError::Attach {
            program: XDP_LIMITER_PROGRAM,
            interface: interface.to_owned(),
            mode,
            source: Box::new(source),
        })?;
    let link = program
        .take_link(id)
        .map_err(load_error(XDP_LIMITER_PROGRAM))?;
    let fd_link = FdLink::try_from(link).map_err(|e| KernelError::Pin {
        what: format!(
            "interface {interface}: the kernel gave a netlink XDP attachment, not a bpf_link \
             (bpf_link for XDP needs Linux 5.9+); it cannot be pinned"
        ),
        source: std::io::Error::other(e.to_string()),
    })?;
    let pinned = fd_link.pin(&pin).map_err(|e| KernelError::Pin {
        what: format!("pinning {}", pin.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    // Closing our fd is fine: the pin holds the link.
    drop(pinned);
    tracing::info!(
        program = XDP_LIMITER_PROGRAM,
        interface,
        mode = %mode,
        pin = %pin.display(),
        "XDP program attached"
    );
    Ok(())
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Makes sure the pin folder's parent is on a bpffs, mounting one at `/sys/fs/bpf` when
/// nothing is mounted there yet (fresh VMs and minimal hosts).
fn ensure_bpffs(pin_dir: &Path) -> Result<(), KernelError> {
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    if is_bpffs(parent) {
        return Ok(());
    }
    let sys_bpf = Path::new("/sys/fs/bpf");
    if parent.starts_with(sys_bpf) && !is_bpffs(sys_bpf) {
        nix::mount::mount(
            Some("bpf"),
            sys_bpf,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| KernelError::Pin {
            what: "mounting bpffs on /sys/fs/bpf".to_owned(),
            source: std::io::Error::from(e),
        })?;
        tracing::info!("mounted bpffs on /sys/fs/bpf");
        if is_bpffs(parent) || parent == sys_bpf {
            return Ok(());
        }
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
        if is_bpffs(parent) {
            return Ok(());
        }
    }
    Err(KernelError::Pin {
        what: format!("{} is not on a bpffs", parent.display()),
        source: std::io::Error::other("pin_dir must be inside a mounted bpf filesystem"),
    })
}

/// Removes pinned maps whose layout differs from the embedded object's, so the loader
/// creates them anew instead of reusing an incompatible map.
fn reconcile_pinned_maps(maps_dir: &Path) -> Result<(), KernelError> {
    let obj = aya_obj::Object::parse(LIMITER_OBJECT)
        .map_err(|e| KernelError::Object(Box::new(aya::EbpfError::ParseError(e))))?;
    let mut seen = HashSet::new();
    for (name, def) in &obj.maps {
        seen.insert(name.clone());
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let Ok(info) = MapInfo::from_pin(&path) else {
            continue;
        };
        let kernel = (
            info.map_type().ok().map(|t| t as u32),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        );
        let wanted = (
            Some(def.map_type()),
            def.key_size(),
            def.value_size(),
            def.max_entries(),
            def.map_flags(),
        );
        if kernel != wanted {
            tracing::warn!(
                map = %name,
                pinned = ?kernel,
                wanted = ?wanted,
                "pinned map layout differs from this build; recreating it"
            );
            std::fs::remove_file(&path).map_err(io_err(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

/// Detaches and removes everything under `pin_dir`: links (which detaches the programs),
/// the steering program and the maps.
pub fn remove_pins(pin_dir: &Path) -> Result<(), KernelError> {
    if !pin_dir.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(pin_dir).map_err(io_err(format!("removing {}", pin_dir.display())))
}

#[cfg(test)]
mod tests {
    use super::tick_from_samples;

    #[test]
    fn tick_length_snaps_to_the_standard_hz_values() {
        // HZ=250 seen over 100 ms: 25 ticks, give or take one at either end.
        assert_eq!(tick_from_samples(25, 100_000_000), Some(4_000_000));
        assert_eq!(tick_from_samples(25, 96_000_000), Some(4_000_000));
        assert_eq!(tick_from_samples(30, 100_000_000), Some(3_333_333));
        assert_eq!(tick_from_samples(100, 100_000_000), Some(1_000_000));
        assert_eq!(tick_from_samples(10, 100_000_000), Some(10_000_000));
        // An unusual tick length is used as measured.
        assert_eq!(tick_from_samples(50, 100_000_000), Some(2_000_000));
        assert_eq!(tick_from_samples(0, 100_000_000), None);
    }
}
