//! The snapshot client: a thread with a small tokio runtime that subscribes to the control
//! daemon's `Watch` stream and applies every snapshot it receives. It reconnects with
//! exponential backoff and jitter; while the control daemon is away the last good snapshot
//! keeps serving.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use omnirelay_proto::v1::{self, WatchRequest, control_plane_client::ControlPlaneClient};
use prost::Message as _;

use super::{MAX_SNAPSHOT_BYTES, SnapshotHolder};
use crate::lb::{SplitMix64, backoff};

/// Where and as whom to subscribe.
#[derive(Clone, Debug)]
pub struct ControlClient {
    /// gRPC endpoint, e.g. `http://127.0.0.1:7800`.
    pub endpoint: String,
    /// This data plane's name in the control daemon's logs.
    pub node_id: String,
    /// Where each snapshot applied is kept, for a restart while the control daemon is
    /// away (see [`save_snapshot`]).
    pub cache: Option<PathBuf>,
    /// TLS to the control daemon (an `https://` endpoint), from [`ControlTlsFiles::load`].
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The files of TLS to the control daemon, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct ControlTlsFiles {
    /// CA certificates (PEM) the control daemon's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This data plane's certificate chain (PEM), for a control daemon that asks for one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// The name the control daemon's certificate must hold (default: the endpoint's host).
    pub server_name: Option<String>,
}

impl ControlTlsFiles {
    /// Checks the files against `endpoint` and reads them. `None`: a plaintext endpoint.
    /// Errors name the flag and the file (`--control-key (/etc/...): ...`).
    pub fn load(
        &self,
        endpoint: &str,
    ) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};

        let https = endpoint
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let Some(ca) = &self.ca else {
            if https {
                return Err(format!(
                    "--control {endpoint}: an https endpoint needs --control-ca (the CA that \
                     signed the control daemon's certificate)"
                ));
            }
            if self.cert.is_some() || self.key.is_some() || self.server_name.is_some() {
                return Err(
                    "--control-cert, --control-key and --control-server-name need \
                            --control-ca and an https:// --control endpoint"
                        .into(),
                );
            }
            return Ok(None);
        };
        if !https {
            return Err(format!(
                "--control {endpoint}: --control-ca is given, so the endpoint must be https://"
            ));
        }
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("{flag} ({}): {e}", path.display()))
        };
        let certs = |flag: &str, path: &Path, bytes: &[u8]| {
            let certs = CertificateDer::pem_slice_iter(bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{flag} ({}): not PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "{flag} ({}): no certificate in the file (PEM \"BEGIN CERTIFICATE\" expected)",
                    path.display()
                ));
            }
            Ok(certs)
        };
        let ca_pem = read("--control-ca", ca)?;
        certs("--control-ca", ca, &ca_pem)?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        match (&self.cert, &self.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let cert_pem = read("--control-cert", cert)?;
                let key_pem = read("--control-key", key)?;
                let chain = certs("--control-cert", cert, &cert_pem)?;
                let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    format!(
                        "--control-key ({}): no private key read (PEM PKCS#8, PKCS#1 or SEC1 \
                         expected): {e}",
                        key.display()
                    )
                })?;
                rustls::sign::CertifiedKey::from_der(
                    chain,
                    der,
                    &rustls::crypto::ring::default_provider(),
                )
                .map_err(|e| {
                    format!(
                        "--control-key ({}): not usable with --control-cert ({}): {e}",
                        key.display(),
                        cert.display()
                    )
                })?;
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            }
            _ => return Err("--control-cert and --control-key go together".into()),
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(Some(tls))
    }
}

const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 ping (and TCP keepalive) interval on the control connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A subscription that lasted this long resets the reconnect backoff when it ends.
const HEALTHY_SUBSCRIPTION: Duration = Duration::from_secs(10);

/// Starts the client thread; it runs for the life of the process.
pub fn spawn_control_client(
    client: ControlClient,
    holder: Arc<SnapshotHolder>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("snapshot-client".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("snapshot client cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(run(client, holder));
        })
}

async fn run(client: ControlClient, holder: Arc<SnapshotHolder>) {
    // Randomly keyed per process (the standard library's hash keys): data planes started
    // together do not reconnect in step.
    let seed = {
        use std::hash::{BuildHasher as _, Hasher as _};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let mut rng = SplitMix64::new(seed);
    let mut reconnects = Reconnects::default();
    loop {
        let started = std::time::Instant::now();
        let outcome = watch_once(&client, &holder).await;
        let attempt = reconnects.next(matches!(outcome, Ok(true)), started.elapsed());
        match outcome {
            Ok(_) => {
                tracing::warn!(endpoint = %client.endpoint, "control stream ended; reconnecting");
            }
            Err(WatchError::Unreachable(e)) => tracing::warn!(
                endpoint = %client.endpoint,
                running_version = holder.version(),
                "control plane unreachable ({e}); serving the last good snapshot"
            ),
            Err(WatchError::Refused(status)) => tracing::error!(
                endpoint = %client.endpoint,
                running_version = holder.version(),
                code = ?status.code(),
                "the control plane refused the subscription: {}; serving the last good snapshot",
                status.message()
            ),
        }
        let delay = backoff(attempt, BASE_BACKOFF, MAX_BACKOFF, &mut || rng.next_u64());
        tokio::time::sleep(delay.max(Duration::from_millis(20))).await;
    }
}

/// Reconnect pacing: the attempt number the backoff grows with counts the subscriptions
/// that failed in a row, and starts over after a working one (it delivered snapshots, or
/// held for [`HEALTHY_SUBSCRIPTION`]), so that a control daemon restarted after a long
/// healthy run is found again within the shortest delays.
#[derive(Debug, Default)]
struct Reconnects {
    failed_in_a_row: u32,
}

impl Reconnects {
    /// The attempt number to back off by after a subscription that `delivered` snapshots
    /// (or not) and `lasted` this long.
    fn next(&mut self, delivered: bool, lasted: Duration) -> u32 {
        if delivered || lasted >= HEALTHY_SUBSCRIPTION {
            self.failed_in_a_row = 0;
        }
        let attempt = self.failed_in_a_row;
        self.failed_in_a_row = self.failed_in_a_row.saturating_add(1);
        attempt
    }
}

/// Why a subscription ended without snapshots.
enum WatchError {
    /// No connection, or the stream broke.
    Unreachable(String),
    /// The control daemon answered and said no.
    Refused(tonic::Status),
}

/// One subscription; returns whether any message arrived.
async fn watch_once(
    client: &ControlClient,
    holder: &Arc<SnapshotHolder>,
) -> Result<bool, WatchError> {
    let endpoint = tonic::transport::Endpoint::from_shared(client.endpoint.clone())
        .map_err(|e| WatchError::Unreachable(format!("bad endpoint {:?}: {e}", client.endpoint)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // The stream is quiet between snapshots: pings find a control host that vanished
        // (crash, partition) instead of waiting on a half-open connection forever.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL));
    let endpoint = match &client.tls {
        Some(tls) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| WatchError::Unreachable(format!("TLS settings: {}", causes(&e))))?,
        None => endpoint,
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| WatchError::Unreachable(causes(&e)))?;
    // Snapshots up to the verifier's limit (tonic's default stops at 4 MiB); larger ones
    // are refused by the verifier with a logged reason, not by the transport.
    let mut grpc =
        ControlPlaneClient::new(channel).max_decoding_message_size(MAX_SNAPSHOT_BYTES + (1 << 20));
    let request = WatchRequest {
        node_id: client.node_id.clone(),
        known_version: holder.version(),
        capabilities: super::verify::CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
    };
    let mut stream = grpc
        .watch(request)
        .await
        .map_err(|s| match s.code() {
            // Cancelled: the connection went away under the call (a TLS alert after the
            // handshake, as when the control daemon wants a client certificate).
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                WatchError::Unreachable(format!("Watch failed: {s}"))
            }
            _ => WatchError::Refused(s),
        })?
        .into_inner();
    tracing::info!(endpoint = %client.endpoint, running_version = holder.version(), "subscribed to the control plane");
    let mut received = false;
    loop {
        match stream.message().await {
            Ok(Some(signed)) => {
                received = true;
                // Off the runtime: building a large snapshot's tables and syncing the cache
                // file must not hold up the connection's pings.
                let (holder, cache) = (Arc::clone(holder), client.cache.clone());
                let applied = tokio::task::spawn_blocking(move || {
                    apply_and_keep(&holder, &signed, cache.as_deref());
                });
                if let Err(e) = applied.await {
                    tracing::error!(error = %e, "applying a snapshot panicked");
                }
            }
            Ok(None) => return Ok(received),
            Err(status) => {
                return Err(WatchError::Unreachable(format!("stream error: {status}")));
            }
        }
    }
}

/// `e` and its sources, outermost first: tonic's own message ("transport error") says
/// little, the TLS or socket error under it says why.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// Applies `signed` (rejections are counted and logged by the holder; the last good
/// snapshot keeps serving) and keeps it in `cache` when it was applied.
fn apply_and_keep(holder: &SnapshotHolder, signed: &v1::SignedSnapshot, cache: Option<&Path>) {
    if let (Ok(version), Some(path)) = (holder.apply_signed(signed), cache)
        && let Err(e) = save_snapshot(path, signed)
    {
        tracing::warn!(version, path = %path.display(), error = %e, "could not keep the snapshot in the cache; a restart without the control plane would start from an older one");
    }
}

/// Writes `signed` to `path` whole (a temporary file beside it, synced, then renamed over
/// it, mode 0600, and the directory synced): a crash mid-write leaves the previous
/// snapshot, never half of one.
pub fn save_snapshot(path: &std::path::Path, signed: &v1::SignedSnapshot) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&signed.encode_to_vec())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    // The rename itself made durable, best effort (the snapshot is in place either way).
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "snapshot cache directory not synced");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use omnirelay_test_support::{
        pki::{TestCa, Usage},
        process::TempDir,
    };

    use std::time::Duration;

    use super::{BASE_BACKOFF, ControlTlsFiles, HEALTHY_SUBSCRIPTION, MAX_BACKOFF, Reconnects};
    use crate::lb::backoff_ceiling;

    #[test]
    fn the_backoff_grows_while_subscriptions_fail_and_starts_over_after_a_working_one() {
        let mut r = Reconnects::default();
        let ceiling = |attempt| backoff_ceiling(attempt, BASE_BACKOFF, MAX_BACKOFF);
        let failed: Vec<u32> = (0..8).map(|_| r.next(false, Duration::ZERO)).collect();
        assert_eq!(failed, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ceiling(*failed.last().unwrap()), MAX_BACKOFF);
        // A subscription that delivered snapshots, however short.
        assert_eq!(r.next(true, Duration::from_millis(5)), 0);
        assert_eq!(ceiling(0), BASE_BACKOFF);
        assert_eq!(r.next(false, Duration::ZERO), 1);
        // One that held long enough without a snapshot (nothing new to send) counts too;
        // a shorter one does not.
        assert_eq!(r.next(false, HEALTHY_SUBSCRIPTION), 0);
        assert_eq!(r.next(false, HEALTHY_SUBSCRIPTION / 2), 1);
        assert_eq!(r.next(false, HEALTHY_SUBSCRIPTION / 2), 2);
    }

    #[test]
    fn tls_flags_are_checked_against_the_endpoint_and_each_other() {
        let dir = TempDir::new("dp-control-tls");
        let p = |n: &str| dir.path().join(n);
        let ca = TestCa::new("test ca").unwrap();
        ca.write_cert(&p("ca.pem")).unwrap();
        ca.issue(&["dp"], Usage::Client, &p("dp.pem"), &p("dp.key"))
            .unwrap();
        ca.issue(&["dp"], Usage::Client, &p("other.pem"), &p("other.key"))
            .unwrap();
        let files = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| ControlTlsFiles {
            ca: ca.map(p),
            cert: cert.map(p),
            key: key.map(p),
            server_name: None,
        };
        let https = "https://control:7800";
        let plain = "http://control:7800";
        assert!(files(None, None, None).load(plain).unwrap().is_none());
        let e = files(None, None, None)
            .load("HTTPS://control:7800")
            .unwrap_err();
        assert!(e.contains("needs --control-ca"), "{e}");
        let e = files(None, None, None).load(https).unwrap_err();
        assert!(e.contains("needs --control-ca"), "{e}");
        let e = files(Some("ca.pem"), None, None).load(plain).unwrap_err();
        assert!(e.contains("must be https://"), "{e}");
        assert!(
            files(Some("ca.pem"), None, None)
                .load(https)
                .unwrap()
                .is_some()
        );
        assert!(
            files(Some("ca.pem"), Some("dp.pem"), Some("dp.key"))
                .load(https)
                .unwrap()
                .is_some()
        );
        let e = files(Some("ca.pem"), Some("dp.pem"), Some("other.key"))
            .load(https)
            .unwrap_err();
        assert!(
            e.contains("--control-key (") && e.contains("not usable with --control-cert"),
            "{e}"
        );
        let e = files(Some("dp.key"), None, None).load(https).unwrap_err();
        assert!(
            e.contains("--control-ca (") && e.contains("no certificate in the file"),
            "{e}"
        );
        let e = files(Some("missing.pem"), None, None)
            .load(https)
            .unwrap_err();
        assert!(e.contains("missing.pem): No such file"), "{e}");
    }
}
