//! Forwards aya-log records written by the eBPF programs to `tracing`.
//!
//! aya-log speaks the `log` facade; this bridge turns each record into a `tracing` event
//! with target `omnirelay::ebpf`, so the daemon's one subscriber (filters, JSON output)
//! covers kernel messages too. A pump thread waits on the ring buffer's fd and drains it.

use std::{
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya_log::EbpfLogger;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::KernelError;

/// How long the pump blocks in `poll` before it checks whether it should stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A `log::Log` that re-emits records as `tracing` events.
#[derive(Debug, Clone, Copy)]
struct TracingBridge {
    program: &'static str,
}

impl log::Log for TracingBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let program = self.program;
        let source = record.target();
        let message = record.args();
        match record.level() {
            log::Level::Error => {
                tracing::error!(target: "omnirelay::ebpf", program, source, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "omnirelay::ebpf", program, source, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "omnirelay::ebpf", program, source, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "omnirelay::ebpf", program, source, "{message}")
            }
            log::Level::Trace => {
                tracing::trace!(target: "omnirelay::ebpf", program, source, "{message}")
            }
        }
    }

    fn flush(&self) {}
}

/// Drains the aya-log ring buffer of one loaded object on a background thread, until
/// dropped. The thread emits into the `tracing` dispatcher that was current when the pump
/// was started, so a test's scoped subscriber sees kernel messages too.
#[derive(Debug)]
pub struct EbpfLogPump {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EbpfLogPump {
    /// Takes the log ring buffer out of `ebpf` and starts draining it. `program` names the
    /// source in every event.
    pub fn start(ebpf: &mut aya::Ebpf, program: &'static str) -> Result<Self, KernelError> {
        let mut logger = EbpfLogger::init_with_logger(ebpf, TracingBridge { program })
            .map_err(KernelError::Log)?;
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("ebpf-log-{program}"))
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    while !stop_flag.load(Ordering::Acquire) {
                        let mut fds = [PollFd::new(logger.as_fd(), PollFlags::POLLIN)];
                        let timeout =
                            PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::MAX);
                        match poll(&mut fds, timeout) {
                            Ok(_) | Err(nix::Error::EINTR) => logger.flush(),
                            Err(e) => {
                                tracing::warn!(program, "polling the eBPF log buffer failed: {e}");
                                break;
                            }
                        }
                    }
                    logger.flush();
                });
            })
            .map_err(KernelError::Spawn)?;
        Ok(EbpfLogPump {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EbpfLogPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
