//! The gRPC control API: `Watch` streams every published snapshot to a data plane, `Get`
//! returns the current one.

use std::{
    pin::Pin,
    sync::{Arc, atomic::Ordering},
};

use omnirelay_proto::v1::{self, control_plane_server::ControlPlane};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt as _, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use super::{metrics::ControlMetrics, publish::Published};

/// The service implementation.
#[derive(Debug, Clone)]
pub struct ControlService {
    rx: watch::Receiver<Option<Arc<Published>>>,
    metrics: Arc<ControlMetrics>,
    /// Turns true when the daemon stops: open Watch streams end (they never end on their
    /// own, and the server's graceful shutdown waits for them).
    stopping: watch::Receiver<bool>,
}

impl ControlService {
    /// A service serving what `rx` publishes until `stopping` turns true.
    pub fn new(
        rx: watch::Receiver<Option<Arc<Published>>>,
        metrics: Arc<ControlMetrics>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        ControlService {
            rx,
            metrics,
            stopping,
        }
    }
}

/// An item of a Watch stream before the stop is cut off.
enum Event {
    Snapshot(v1::SignedSnapshot),
    Stop,
}

/// Decrements the watcher gauge when a stream ends (client gone or daemon stopping).
struct WatcherGuard(Arc<ControlMetrics>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The capabilities of `required` a data plane that has `has` lacks; none when it did not
/// say what it has.
fn missing_capabilities<'a>(required: &'a [String], has: &[String]) -> Vec<&'a str> {
    if has.is_empty() {
        return Vec::new();
    }
    required
        .iter()
        .filter(|c| !has.contains(c))
        .map(String::as_str)
        .collect()
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<v1::SignedSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl ControlPlane for ControlService {
    type WatchStream = SnapshotStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let latest = self.rx.borrow().as_ref().map(|p| p.version);
        if let Some(latest) = latest
            && req.known_version > latest
        {
            // Its snapshots came from a history this daemon does not have (a lost or
            // replaced state dir): nothing this daemon publishes for a while would be newer,
            // so say so instead of streaming nothing.
            tracing::warn!(node = %req.node_id, known_version = req.known_version, latest, "refused a data plane that runs a newer version than this daemon published: the snapshot history in the state dir is not the one it followed");
            return Err(Status::failed_precondition(format!(
                "the data plane runs snapshot version {}, newer than this control daemon's latest ({latest}): the daemon's snapshot history (state dir) was lost or replaced; restore it, or restart the data plane (without its snapshot cache, if it keeps one) to follow the new history",
                req.known_version
            )));
        }
        tracing::info!(node = %req.node_id, known_version = req.known_version, "data plane subscribed");
        self.metrics.watchers.fetch_add(1, Ordering::Relaxed);
        let guard = WatcherGuard(Arc::clone(&self.metrics));
        let mut last_sent = req.known_version;
        let metrics = Arc::clone(&self.metrics);
        let snapshots = WatchStream::new(self.rx.clone()).filter_map(move |published| {
            let p = published?;
            if p.version <= last_sent {
                return None;
            }
            last_sent = p.version;
            // Sent anyway: the data plane refuses it with its own logged reason and metric,
            // and keeps serving its last good snapshot; this side says so too.
            let missing = missing_capabilities(&p.required_capabilities, &req.capabilities);
            if !missing.is_empty() {
                metrics.unsupported_sends.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %req.node_id, version = p.version, ?missing, "a data plane lacks capabilities this snapshot requires: it will refuse the snapshot and keep its last good one (upgrade it, or change the config back)");
            }
            Some(Event::Snapshot(p.signed.clone()))
        });
        let stop = WatchStream::new(self.stopping.clone())
            .filter(|stopping| *stopping)
            .map(|_| Event::Stop);
        let stream = snapshots
            .merge(stop)
            .take_while(|e| matches!(e, Event::Snapshot(_)))
            .filter_map(move |e| {
                let _alive = &guard;
                match e {
                    Event::Snapshot(s) => Some(Ok(s)),
                    Event::Stop => None,
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get(
        &self,
        _request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::SignedSnapshot>, Status> {
        let current = self.rx.borrow().clone();
        match current {
            Some(p) => Ok(Response::new(p.signed.clone())),
            None => Err(Status::unavailable("no snapshot has been published yet")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::Ordering};

    use omnirelay_proto::v1::{self, control_plane_server::ControlPlane as _};
    use tokio::sync::watch;
    use tokio_stream::StreamExt as _;
    use tonic::Request;

    use super::ControlService;
    use crate::daemon::{metrics::ControlMetrics, publish};

    /// A data plane that says which capabilities it has hears (through the daemon's log
    /// and metric) about a snapshot it will refuse; one that says nothing is not judged.
    #[tokio::test]
    async fn a_snapshot_a_data_plane_cannot_run_is_counted() {
        let dir = std::env::temp_dir().join(format!("omnirelay-grpc-caps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("omnirelay.toml"), publish::tests::CONFIG).unwrap();
        let publisher = publish::tests::start(&dir);
        assert!(matches!(
            publisher.reload(),
            publish::ReloadOutcome::Published(1)
        ));
        let metrics = Arc::new(ControlMetrics::default());
        let (_stop, stopping) = watch::channel(false);
        let service = ControlService::new(publisher.subscribe(), Arc::clone(&metrics), stopping);
        for (caps, unsupported) in [
            (vec!["http1", "lb.round_robin"], 0),
            (vec![], 0),
            (vec!["http1"], 1),
        ] {
            let request = v1::WatchRequest {
                node_id: "test".into(),
                known_version: 0,
                capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            };
            let mut stream = service
                .watch(Request::new(request))
                .await
                .unwrap()
                .into_inner();
            let first = stream.next().await.unwrap().unwrap();
            assert_eq!(first.version, 1);
            assert_eq!(
                metrics.unsupported_sends.load(Ordering::Relaxed),
                unsupported,
                "{caps:?}"
            );
        }
        assert!(
            metrics
                .render()
                .contains("omnirelay_control_unsupported_snapshots_total 1\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
