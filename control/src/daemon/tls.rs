//! TLS on the gRPC control API (`[control.tls]`).
//!
//! The daemon presents `cert` and `key`; with `client_ca`, a data plane must present a
//! certificate that chains to it, or the handshake is refused (mutual TLS). The files are
//! read at start (a file that does not load stops the daemon with the field, the path and
//! the reason) and again at every reload (config change, SIGHUP, `POST /control/reload`):
//! a renewed certificate takes effect for new connections by replacing the files and
//! reloading. Files that do not load at a reload are logged and counted, and the running
//! certificate stays. Handshakes run beside the accept loop, each bounded in time, and a
//! refused one is logged with the peer's address and the reason.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, atomic::Ordering},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::ControlMetrics;
use crate::config;

/// A handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the gRPC server to take them.
const READY_QUEUE: usize = 64;

/// The control API's TLS settings in force, reloadable.
#[derive(Debug)]
pub struct ControlTls {
    /// Relative paths in the config are taken from here (the config file's folder).
    base: PathBuf,
    current: RwLock<Loaded>,
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
            metrics,
        })
    }

    /// Reads the files again (the section of the config in force now). Unchanged files
    /// change nothing; files that do not load keep the running certificate.
    pub fn reload(&self, section: Option<&config::ControlTls>) {
        let Some(section) = section else {
            tracing::warn!(
                "[control.tls] was removed from the config: the gRPC API stays on TLS until the \
                 daemon restarts"
            );
            return;
        };
        match load(section, &self.base) {
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
                        let _ = tcp.set_nodelay(true);
                        tokio::spawn(Arc::clone(&self).handshake(tcp, peer, ready.clone()));
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
        self: Arc<Self>,
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
        self.metrics
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "control API TLS handshake failed: {refused}");
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
        ca.issue(
            &["localhost"],
            Usage::Server,
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )
        .unwrap();
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
        ca.issue(&["localhost"], Usage::Server, &p("server.pem"), &p("a.key"))
            .unwrap();
        ca.issue(
            &["localhost"],
            Usage::Server,
            &p("other.pem"),
            &p("server.key"),
        )
        .unwrap();
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
        ca.issue(
            &["localhost"],
            Usage::Server,
            &p("server.pem"),
            &p("server.key"),
        )
        .unwrap();
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
        // Renewed files: a new config.
        ca.issue(
            &["localhost"],
            Usage::Server,
            &p("server.pem"),
            &p("server.key"),
        )
        .unwrap();
        tls.reload(Some(&section(None)));
        assert!(!Arc::ptr_eq(&first, &tls.current.read().unwrap().config));
    }
}
