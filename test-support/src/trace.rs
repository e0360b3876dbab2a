//! Captures `tracing` events in memory so tests can assert what was logged.

use std::sync::{Arc, Mutex};

use tracing::{Dispatch, Subscriber, field::Visit};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

/// One captured event.
#[derive(Clone, Debug)]
pub struct CapturedEvent {
    /// The event's target (e.g. `omnirelay::ebpf`).
    pub target: String,
    /// Its level.
    pub level: tracing::Level,
    /// The `message` field plus every other field as `name=value`.
    pub text: String,
}

/// A sink for events; clone it freely, all clones share the same list.
#[derive(Clone, Debug, Default)]
pub struct CapturedEvents(Arc<Mutex<Vec<CapturedEvent>>>);

impl CapturedEvents {
    /// A new, empty capture and a dispatcher that records into it. Install the dispatcher
    /// with `tracing::dispatcher::with_default` (per thread) where the code under test runs.
    pub fn new() -> (Self, Dispatch) {
        let events = CapturedEvents::default();
        let layer = CaptureLayer(events.clone());
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        // A callsite first hit on another thread while no subscriber was interested may have
        // cached "never"; recompute so this dispatcher sees it. A callsite registered
        // concurrently with this call can still miss it: in tests that run beside others
        // which log, prefer asserting on a child process's output.
        tracing::callsite::rebuild_interest_cache();
        (events, dispatch)
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<CapturedEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The first event whose target is `target` and whose text contains `needle`.
    pub fn find(&self, target: &str, needle: &str) -> Option<CapturedEvent> {
        self.all()
            .into_iter()
            .find(|e| e.target == target && e.text.contains(needle))
    }

    /// Waits (polling, at most `timeout`) for an event matching [`Self::find`].
    pub fn wait_for(
        &self,
        target: &str,
        needle: &str,
        timeout: std::time::Duration,
    ) -> Option<CapturedEvent> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(target, needle) {
                return Some(e);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

struct CaptureLayer(CapturedEvents);

struct TextVisitor(String);

impl Visit for TextVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.0.push_str(&format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut visitor = TextVisitor(String::new());
        event.record(&mut visitor);
        let captured = CapturedEvent {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            text: visitor.0,
        };
        if let Ok(mut v) = (self.0).0.lock() {
            v.push(captured);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_events_with_fields_on_the_installing_thread() {
        let (events, dispatch) = CapturedEvents::new();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(target: "omnirelay::x", iface = "veth0", "attached");
        });
        tracing::info!(target: "omnirelay::x", "not captured: no dispatcher here");
        let all = events.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].target, "omnirelay::x");
        assert!(all[0].text.contains("attached"), "{}", all[0].text);
        assert!(all[0].text.contains("iface=veth0"), "{}", all[0].text);
        assert!(events.find("omnirelay::x", "attached").is_some());
        assert!(events.find("other", "attached").is_none());
    }
}
