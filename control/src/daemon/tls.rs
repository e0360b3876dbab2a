//! TLS on the gRPC control API (`[control.tls]`).
//!
//! The daemon presents `cert` and `key`; with `client_ca`, a data plane must present a
//! certificate that chains to it, or the handshake is refused (mutual TLS). The files are
//! read at start (a file that does not load stops the daemon with the field, the path and
//! the reason) and again at every reload (config change, SIGHUP, `POST /control/reload`):
//! a renewed certificate takes effect for new connections by replacing the files and
//! reloading. Files that do not load at a reload are logged and counted, and the running
//! certificate stays. Whether client certificates are asked for is fixed at start, like
//! TLS itself. Handshakes run beside the accept loop, at most [`MAX_HANDSHAKES`] at once
//! (more connections are closed at once and counted), each bounded in time; a refused
//! one is counted and logged with the peer's address and the reason (at most one line a
//! second).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::ControlMetrics;
use crate::config;

/// A handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; a connection beyond them is closed unanswered (data
/// planes reconnect with backoff), so that a flood of connections cannot take every file
/// descriptor or all the CPU.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshaken connections waiting for the gRPC server to take them.
const READY_QUEUE: usize = 64;

/// The control API's TLS settings in force, reloadable.
#[derive(Debug)]
pub struct ControlTls {
    /// Relative paths in the config are taken from here (the config file's folder).
    base: PathBuf,
    current: RwLock<Loaded>,
    /// The section the running certificate was read from (whether it has `client_ca` is
    /// fixed at start).
    section: Mutex<config::ControlTls>,
    handshakes: Arc<Semaphore>,
    /// Seconds since `started` when a refused handshake was last logged.
    last_logged: AtomicU64,
    started: Instant,
    metrics: Arc<ControlMetrics>,
}

#[derive(Debug)]
struct Loaded {
    /// The bytes of the files it was built from: a reload of unchanged files is a no-op.
    files: Vec<u8>,
    config: Arc<ServerConfig>,
}

impl ControlTls {
    /// Loads `section`'s files, relative paths taken from the folder of `config_file`.
    pub fn load(
        section: &config::ControlTls,
        config_file: &Path,
        metrics: Arc<ControlMetrics>,
    ) -> Result<ControlTls, String> {
        let base = match config_file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let loaded = load(section, &base)?;
        Ok(ControlTls {
            base,
            current: RwLock::new(loaded),
            section: Mutex::new(section.clone()),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            last_logged: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            metrics,
        })
    }

    /// Follows the section of the config in force now, `None` when it has none: reads its
    /// files again. Unchanged files change nothing; files that do not load keep the running
    /// certificate. Removing the section, or `client_ca`, or adding `client_ca`, needs a
    /// restart (warned, and the files of the new section are not taken).
    pub fn reload(&self, section: Option<&config::ControlTls>) {
        let Some(section) = section else {
            tracing::warn!(
                "[control.tls] was removed from the config: the gRPC API stays on TLS until the \
                 daemon restarts"
            );
            return;
        };
        let mut running = self.section.lock().unwrap_or_else(|e| e.into_inner());
        let mutual = running.client_ca.is_some();
        if section.client_ca.is_some() != mutual {
            tracing::warn!(
                mutual,
                "control.tls.client_ca was {} the config: client certificates stay {} until \
                 the daemon restarts; the certificate files are not reloaded meanwhile",
                if mutual { "removed from" } else { "added to" },
                if mutual { "required" } else { "unasked" },
            );
            return;
        }
        *running = section.clone();
        drop(running);
        self.refresh();
    }

    /// Reads the files of the section in force again (a reload while the config does not
    /// load: a renewed certificate is still taken).
    pub fn refresh(&self) {
        let section = self
            .section
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match load(&section, &self.base) {
            Ok(fresh) => {
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                if current.files != fresh.files {
                    *current = fresh;
                    tracing::info!(cert = %section.cert.display(), "control API certificate reloaded");
                }
            }
            Err(e) => {
                self.metrics
                    .tls_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("[control.tls] not reloaded, the running certificate stays: {e}");
            }
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(Arc::clone(&current.config))
    }

    /// Accepts on `listener` until `stopping` turns true, and hands the connections whose
    /// handshake succeeded to the gRPC server.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        mut stopping: watch::Receiver<bool>,
    ) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (ready, rx) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopping.wait_for(|stop| *stop) => return,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((tcp, peer)) => {
                        let Ok(permit) = Arc::clone(&self.handshakes).try_acquire_owned() else {
                            self.refused(peer, "too many handshakes in progress; closed");
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let (this, ready) = (Arc::clone(&self), ready.clone());
                        tokio::spawn(async move {
                            this.handshake(tcp, peer, ready).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "control API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        ready: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
    ) {
        let refused =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor().accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send(Ok(tls)).await;
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("not finished within {HANDSHAKE_TIMEOUT:?}"),
            };
        self.refused(peer, &refused);
    }

    /// Counts a refused connection and logs it, at most once a second (a flood of them
    /// must not flood the log too).
    fn refused(&self, peer: SocketAddr, why: &str) {
        let n = self
            .metrics
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let second = self.started.elapsed().as_secs();
        if self.last_logged.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(%peer, refused_so_far = n, "control API TLS handshake failed: {why}");
        }
    }
}

/// Builds the server config from `section`'s files. Every problem is named with its field
/// and file, all of them at once.
fn load(section: &config::ControlTls, base: &Path) -> Result<Loaded, String> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut read = |field: &str, path: &Path| -> Option<(PathBuf, Vec<u8>)> {
        let full = base.join(path);
        match std::fs::read(&full) {
            Ok(bytes) => {
                files.extend_from_slice(&bytes);
                Some((full, bytes))
            }
            Err(e) => {
                errors.push(format!("control.tls.{field} ({}): {e}", full.display()));
                None
            }
        }
    };
    let cert = read("cert", &section.cert);
    let key = read("key", &section.key);
    let client_ca = section.client_ca.as_ref().map(|p| read("client_ca", p));

    let chain = cert.and_then(|(path, bytes)| {
        certificates(&bytes)
            .map_err(|e| errors.push(format!("control.tls.cert ({}): {e}", path.display())))
            .ok()
    });
    let key = key.and_then(|(path, bytes)| {
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| {
                errors.push(format!(
                    "control.tls.key ({}): no private key read (PEM PKCS#8, PKCS#1 or SEC1 \
                     expected): {e}",
                    path.display()
                ))
            })
            .ok()
    });
    let roots = match client_ca {
        Some(Some((path, bytes))) => {
            let mut store = RootCertStore::empty();
            match certificates(&bytes) {
                Ok(cas) => {
                    for (i, ca) in cas.into_iter().enumerate() {
                        if let Err(e) = store.add(ca) {
                            errors.push(format!(
                                "control.tls.client_ca ({}): certificate {}: {e}",
                                path.display(),
                                i + 1
                            ));
                        }
                    }
                }
                Err(e) => errors.push(format!("control.tls.client_ca ({}): {e}", path.display())),
            }
            Some(store)
        }
        // Unreadable: already recorded.
        Some(None) => None,
        None => None,
    };
    let (Some(chain), Some(key), true) = (chain, key, errors.is_empty()) else {
        return Err(errors.join("; "));
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("control.tls: {e}"))?;
    let builder = match roots {
        Some(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("control.tls.client_ca: {e}"))?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "control.tls.key ({}): not usable with control.tls.cert ({}): {e}",
            base.join(&section.key).display(),
            base.join(&section.cert).display()
        )
    })?;
    // gRPC is HTTP/2: a client that cannot speak it fails at the handshake, not after.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        files,
        config: Arc::new(config),
    })
}

/// Every PEM certificate in `bytes`; none is an error.
fn certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file (PEM \"BEGIN CERTIFICATE\" expected)".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use omnirelay_test_support::{
        pki::{TestCa, Usage},
        process::TempDir,
    };

    use super::{ControlMetrics, ControlTls, load};
    use crate::config;

    /// `ca` issues a server certificate for `localhost` into `cert` and `key`.
    fn server_cert(ca: &TestCa, cert: &std::path::Path, key: &std::path::Path) {
        ca.issue(&["localhost"], Usage::Server, cert, key).unwrap();
    }

    fn section(client_ca: Option<&str>) -> config::ControlTls {
        config::ControlTls {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_ca: client_ca.map(Into::into),
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let dir = TempDir::new("control-tls");
        let ca = TestCa::new("test ca").unwrap();
        server_cert(
            &ca,
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        );
        ca.write_cert(&dir.path().join("ca.pem")).unwrap();
        let plain = load(&section(None), dir.path()).unwrap();
        assert_eq!(plain.config.alpn_protocols, vec![b"h2".to_vec()]);
        let mutual = load(&section(Some("ca.pem")), dir.path()).unwrap();
        assert_eq!(mutual.config.alpn_protocols, vec![b"h2".to_vec()]);
        // A CA file that holds no certificate is no CA.
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let e = load(&section(Some("ca.pem")), dir.path()).unwrap_err();
        assert!(e.contains("control.tls.client_ca ("), "{e}");
    }

    #[test]
    fn every_bad_file_is_named_with_its_field_and_path() {
        let dir = TempDir::new("control-tls");
        std::fs::write(dir.path().join("server.pem"), "not a certificate\n").unwrap();
        let e = load(&section(Some("missing-ca.pem")), dir.path()).unwrap_err();
        assert!(
            e.contains("control.tls.cert (")
                && e.contains("server.pem): no certificate in the file"),
            "{e}"
        );
        assert!(
            e.contains("control.tls.key (") && e.contains("server.key): No such file"),
            "{e}"
        );
        assert!(
            e.contains("control.tls.client_ca (") && e.contains("missing-ca.pem): No such file"),
            "{e}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = TempDir::new("control-tls");
        let ca = TestCa::new("test ca").unwrap();
        let p = |n: &str| dir.path().join(n);
        server_cert(&ca, &p("server.pem"), &p("a.key"));
        server_cert(&ca, &p("other.pem"), &p("server.key"));
        let e = load(&section(None), dir.path()).unwrap_err();
        assert!(
            e.contains("control.tls.key (") && e.contains("not usable with control.tls.cert"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_with_broken_files_keeps_the_running_certificate() {
        let dir = TempDir::new("control-tls");
        let ca = TestCa::new("test ca").unwrap();
        let p = |n: &str| dir.path().join(n);
        server_cert(&ca, &p("server.pem"), &p("server.key"));
        let metrics = Arc::new(ControlMetrics::default());
        let tls = ControlTls::load(
            &section(None),
            &dir.path().join("omnirelay.toml"),
            Arc::clone(&metrics),
        )
        .unwrap();
        let first = Arc::clone(&tls.current.read().unwrap().config);
        // Unchanged files: the same config stays.
        tls.reload(Some(&section(None)));
        assert!(Arc::ptr_eq(&first, &tls.current.read().unwrap().config));
        // Broken files: counted, and the same config stays.
        std::fs::write(p("server.pem"), "truncated").unwrap();
        tls.reload(Some(&section(None)));
        assert!(Arc::ptr_eq(&first, &tls.current.read().unwrap().config));
        assert_eq!(
            metrics
                .tls_reload_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Asking for client certificates is fixed at start: not switched by a reload.
        ca.write_cert(&p("ca.pem")).unwrap();
        tls.reload(Some(&section(Some("ca.pem"))));
        assert!(Arc::ptr_eq(&first, &tls.current.read().unwrap().config));
        // Renewed files: a new config.
        server_cert(&ca, &p("server.pem"), &p("server.key"));
        tls.reload(Some(&section(None)));
        assert!(!Arc::ptr_eq(&first, &tls.current.read().unwrap().config));
    }
}
