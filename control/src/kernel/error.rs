use std::fmt;

/// Why a kernel operation failed, with what an operator needs to act on it: the program,
/// the interface and mode, the syscall and its errno, or the verifier's log.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The embedded object could not be parsed or its maps could not be created.
    #[error("loading the eBPF object failed: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// The object does not contain an expected program or map (a build mismatch).
    #[error("the eBPF object has no {kind} named {name:?}")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// The name looked up.
        name: &'static str,
    },
    /// The kernel refused the program; for a verifier rejection the log is in the source.
    #[error("the kernel refused to load program {program}: {source}")]
    Load {
        /// The program name.
        program: &'static str,
        /// aya's error; `ProgramError::LoadError` carries the verifier log.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Attaching to an interface failed. Never silently retried in another mode.
    #[error("attaching {program} to interface {interface} in {mode} mode failed: {source}")]
    Attach {
        /// The program name.
        program: &'static str,
        /// The interface name.
        interface: String,
        /// The requested attach mode.
        mode: super::AttachMode,
        /// aya's error, with the syscall and errno.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// The map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The aya-log ring buffer could not be opened.
    #[error("opening the eBPF log buffer failed: {0}")]
    Log(#[source] aya_log::Error),
    /// A bpffs pin could not be created, opened or removed.
    #[error("{what}: {source}")]
    Pin {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A fact of the system the limiter needs could not be read.
    #[error("{what}: {source}")]
    System {
        /// What was being read.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A self-check of a measurement or a kernel answer failed.
    #[error("{0}")]
    Check(String),
    /// A helper thread could not be started.
    #[error("spawning the eBPF log thread failed: {0}")]
    Spawn(#[source] std::io::Error),
}

impl fmt::Display for super::AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            super::AttachMode::Generic => "generic (skb)",
            super::AttachMode::Native => "native (driver)",
            super::AttachMode::Offload => "offload (hardware)",
        })
    }
}
