//! The control daemon: publishes signed snapshots of the config over gRPC (push) and HTTP
//! (pull), recompiles when the config changes (file watch, SIGHUP, `POST /control/reload`),
//! and serves its admin API. An invalid config never replaces a published snapshot.

mod admin;
mod grpc;
mod kernel;
mod metrics;
mod publish;
mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use omnirelay_abstractions::config::ConfigSource;
use omnirelay_plugin_config_file::FileConfigSource;
use omnirelay_plugin_store_sqlite::SqliteSnapshotStore;
use omnirelay_proto::v1::control_plane_server::ControlPlaneServer;
use tokio::sync::{mpsc, oneshot};

pub use kernel::KernelService;
pub use metrics::ControlMetrics;
pub use publish::{Published, Publisher, ReloadOutcome};
pub use tls::ControlTls;

use crate::snapshot::SnapshotSigner;

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The config file.
    pub config: PathBuf,
    /// Holds the signing key and the SQLite history.
    pub state_dir: PathBuf,
    /// Overrides `[control].grpc_listen`.
    pub grpc_listen: Option<SocketAddr>,
    /// Overrides `[control].admin_listen`.
    pub admin_listen: Option<SocketAddr>,
}

type ReloadRequest = oneshot::Sender<ReloadOutcome>;

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating state dir {}", opts.state_dir.display()))?;
    let signer = SnapshotSigner::load_or_create(&opts.state_dir)?;
    let store = SqliteSnapshotStore::open(&opts.state_dir.join("snapshots.db"))?;
    let source: Arc<dyn ConfigSource> = Arc::new(FileConfigSource::new(&opts.config));
    let metrics = Arc::new(ControlMetrics::default());
    let publisher = Arc::new(
        Publisher::new(
            Arc::clone(&source),
            Arc::new(store),
            signer,
            Arc::clone(&metrics),
        )
        .map_err(anyhow::Error::msg)?,
    );

    // First load: decides the listen addresses. With nothing published and an invalid
    // config there is nothing to serve: fail loudly.
    let first = tokio::task::spawn_blocking({
        let p = Arc::clone(&publisher);
        move || p.reload()
    })
    .await?;
    if publisher.current().is_none() {
        match first {
            ReloadOutcome::Invalid(errors) => anyhow::bail!("{errors}"),
            other => anyhow::bail!("no snapshot to serve: {other:?}"),
        }
    }
    // Addresses, TLS and the kernel section come from the config the first load parsed.
    // An invalid config at start with a stored snapshot to serve: that snapshot is served
    // on the file's `[control]` settings, read on their own, without the kernel side. When
    // `[control]` does not read either, the daemon does not start: serving on defaults
    // could serve plaintext where the file asks for TLS.
    let (control, kernel_section) = match publisher.config() {
        Some(c) => (c.control.clone(), c.kernel.clone()),
        None => {
            let origin = opts.config.display().to_string();
            let control = std::fs::read_to_string(&opts.config)
                .map_err(|e| format!("{origin}: {e}"))
                .and_then(|text| {
                    crate::config::parse_control(&text, &origin).map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    anyhow::anyhow!(
                        "the config does not load, and its [control] section (addresses, TLS) \
                         cannot be read either, so the stored snapshot is not served: {e}"
                    )
                })?;
            tracing::warn!(
                config = %opts.config.display(),
                version = publisher.current().map_or(0, |p| p.version),
                "the config does not load (see above): serving the stored snapshot without \
                 the kernel limiter until the daemon restarts with a valid config"
            );
            (control, crate::config::KernelSection::default())
        }
    };
    let tls = match &control.tls {
        Some(section) => Some(Arc::new(
            ControlTls::load(section, &opts.config, Arc::clone(&metrics))
                .map_err(|e| anyhow::anyhow!("[control.tls] does not load: {e}"))?,
        )),
        None => None,
    };
    // The kernel side starts before anything listens: an attach failure stops the daemon
    // with the interface, mode and errno. Interfaces, mode and pin folder are read once;
    // budgets, prefix lists and weights follow every published snapshot.
    let current = publisher.current();
    let kernel = tokio::task::spawn_blocking(move || {
        KernelService::start(&kernel_section, current.as_deref())
    })
    .await?
    .context("starting the kernel limiter ([kernel] in the config)")?;
    if let Some(k) = &kernel {
        tokio::spawn(Arc::clone(k).follow(publisher.subscribe()));
    }
    let grpc_addr = opts.grpc_listen.unwrap_or(control.grpc_listen);
    let admin_addr = opts.admin_listen.unwrap_or(control.admin_listen);

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(16);
    let _watch = source.watch(Box::new({
        let tx = reload_tx.clone();
        move || {
            let (done, _) = oneshot::channel();
            let _ = tx.try_send(done);
        }
    }))?;
    tokio::spawn(reload_loop(Arc::clone(&publisher), tls.clone(), reload_rx));
    tokio::spawn(sighup_loop(reload_tx.clone()));

    let admin = admin::router(admin::AdminState {
        publisher: Arc::clone(&publisher),
        metrics: Arc::clone(&metrics),
        kernel,
        reload: reload_tx,
    });
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding admin address {admin_addr}"))?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {grpc_addr}"))?;
    tracing::info!(
        %grpc_addr,
        %admin_addr,
        grpc_tls = match &control.tls {
            None => "off",
            Some(t) if t.client_ca.is_some() => "mutual",
            Some(_) => "server",
        },
        "control daemon listening"
    );

    // One signal handler; both servers and the open Watch streams follow it.
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: closing the Watch streams and the servers");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let service = grpc::ControlService::new(
        publisher.subscribe(),
        Arc::clone(&metrics),
        stopping.clone(),
    );
    let server = tonic::transport::Server::builder().add_service(ControlPlaneServer::new(service));
    let grpc_stop = stopped(stopping.clone());
    let accept_stop = stopping.clone();
    let grpc = async move {
        match tls {
            Some(tls) => {
                server
                    .serve_with_incoming_shutdown(
                        tls.incoming(grpc_listener, accept_stop),
                        grpc_stop,
                    )
                    .await
            }
            None => {
                server
                    .serve_with_incoming_shutdown(
                        // Snapshots are pushed as soon as they exist: no Nagle delay on the
                        // streams (tonic's own nodelay setting does not apply to an
                        // incoming stream).
                        tokio_stream::StreamExt::map(
                            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                            |conn| {
                                if let Ok(c) = &conn {
                                    let _ = c.set_nodelay(true);
                                }
                                conn
                            },
                        ),
                        grpc_stop,
                    )
                    .await
            }
        }
    };
    let admin = axum::serve(admin_listener, admin).with_graceful_shutdown(stopped(stopping));
    let (g, a) = tokio::join!(grpc, admin);
    g.context("gRPC server")?;
    a.context("admin server")?;
    tracing::info!("control daemon stopped");
    Ok(())
}

/// How long a reload waits for more triggers of the same burst.
const RELOAD_COALESCE: std::time::Duration = std::time::Duration::from_millis(10);

/// Serializes reloads; coalesces bursts of triggers (an editor's write + rename) into one.
/// Each reload also reads the `[control.tls]` files again (certificate renewal).
async fn reload_loop(
    publisher: Arc<Publisher>,
    tls: Option<Arc<ControlTls>>,
    mut rx: mpsc::Receiver<ReloadRequest>,
) {
    while let Some(first) = rx.recv().await {
        // A short pause groups a burst of triggers (an editor's write, then rename).
        tokio::time::sleep(RELOAD_COALESCE).await;
        let mut waiters = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiters.push(more);
        }
        let (p, tls) = (Arc::clone(&publisher), tls.clone());
        let outcome = match tokio::task::spawn_blocking(move || {
            let outcome = p.reload();
            // The config in force (the last valid one); none yet (the daemon started on an
            // invalid one): the TLS files it started with are read again.
            match (&tls, p.config()) {
                (Some(t), Some(config)) => t.reload(config.control.tls.as_ref()),
                (Some(t), None) => t.refresh(),
                (None, Some(config)) if config.control.tls.is_some() => tracing::warn!(
                    "[control.tls] was added to the config: the gRPC API stays plaintext until \
                     the daemon restarts"
                ),
                (None, _) => {}
            }
            outcome
        })
        .await
        {
            Ok(o) => o,
            Err(e) => ReloadOutcome::Failed(format!("reload task panicked: {e}")),
        };
        // Every trigger of the burst was served by this one reload: each gets its outcome
        // (a POST /control/reload that arrived with a file-change event must still learn
        // that the config was invalid).
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
    }
}

async fn sighup_loop(tx: mpsc::Sender<ReloadRequest>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!(
            "cannot install the SIGHUP handler; reload by file change or POST /control/reload"
        );
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let (done, _) = oneshot::channel();
        if tx.send(done).await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::{mpsc, oneshot};

    use super::{ReloadOutcome, reload_loop};

    #[tokio::test]
    async fn every_trigger_of_a_coalesced_burst_gets_the_reload_outcome() {
        let dir = std::env::temp_dir().join(format!("omnirelay-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("omnirelay.toml");
        std::fs::write(&config, super::publish::tests::CONFIG).unwrap();
        let publisher = Arc::new(super::publish::tests::start(&dir));
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(reload_loop(Arc::clone(&publisher), None, rx));
        let burst = || async {
            // A file-change event and a POST /control/reload within one coalescing pause.
            let (a, a_rx) = oneshot::channel();
            let (b, b_rx) = oneshot::channel();
            tx.send(a).await.unwrap();
            tx.send(b).await.unwrap();
            [a_rx.await.unwrap(), b_rx.await.unwrap()]
        };
        for o in burst().await {
            assert!(matches!(o, ReloadOutcome::Published(1)), "{o:?}");
        }
        std::fs::write(&config, "not toml [").unwrap();
        for o in burst().await {
            assert!(matches!(o, ReloadOutcome::Invalid(_)), "{o:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
