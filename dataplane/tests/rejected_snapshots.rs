//! Snapshots the data plane must refuse: a bad signature, an older version, a truncated
//! body, a capability it lacks. Each is rejected with a logged reason and a metric, and
//! the last good snapshot keeps serving.
//!
//! The real control daemon never produces such snapshots, so this test serves the control
//! API itself: a stand-in implementing the same gRPC service, streaming crafted snapshots.
//! Everything else is real (nginx upstream, the data plane binary, curl).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use common::{Ports, get};
use ed25519_dalek::{Signer as _, SigningKey};
use omnirelay_proto::{
    signed_message,
    v1::{
        self,
        control_plane_server::{ControlPlane, ControlPlaneServer},
    },
};
use omnirelay_test_support::{
    Capability,
    nginx::Nginx,
    process::{ChildGuard, TempDir, wait_for_port, wait_until},
    require_caps,
};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};

type Feed =
    Arc<tokio::sync::Mutex<Option<mpsc::Receiver<Result<v1::SignedSnapshot, tonic::Status>>>>>;

struct StandIn(Feed);

#[tonic::async_trait]
impl ControlPlane for StandIn {
    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<v1::SignedSnapshot, tonic::Status>> + Send>>;
    async fn watch(
        &self,
        _: tonic::Request<v1::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let rx = self
            .0
            .lock()
            .await
            .take()
            .ok_or_else(|| tonic::Status::unavailable("one subscriber only"))?;
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
    async fn get(
        &self,
        _: tonic::Request<v1::GetRequest>,
    ) -> Result<tonic::Response<v1::SignedSnapshot>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }
}

fn snapshot(version: u64, p: &Ports, port: u16) -> v1::Snapshot {
    v1::Snapshot {
        version,
        required_capabilities: vec!["http1".into()],
        listeners: vec![v1::Listener {
            name: "public".into(),
            address: format!("127.0.0.1:{}", p.proxy),
            route_indices: vec![0],
            ..Default::default()
        }],
        routes: vec![v1::Route {
            name: "default".into(),
            cluster_index: 0,
            path: Some(v1::route::Path::Prefix("/".into())),
            ..Default::default()
        }],
        clusters: vec![v1::Cluster {
            name: "c".into(),
            endpoints: vec![v1::Endpoint {
                address: format!("127.0.0.1:{port}"),
                weight: 1,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn sign(key: &SigningKey, s: &v1::Snapshot) -> v1::SignedSnapshot {
    let payload = s.encode_to_vec();
    v1::SignedSnapshot {
        signature: key.sign(&signed_message(&payload)).to_bytes().to_vec(),
        key_id: hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8]),
        version: s.version,
        payload,
    }
}

fn metric(p: &Ports, series: &str) -> f64 {
    let out = common::curl(&["-s", &format!("http://127.0.0.1:{}/metrics", p.dp_admin)]);
    common::metric(&String::from_utf8_lossy(&out.stdout), series).unwrap_or(-1.0)
}

#[test]
fn bad_signature_older_version_truncation_and_unknown_capability_are_rejected() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let p = Ports::new();
    let _nginx = Nginx::start(&common::nginx_servers(&p), &[p.up1, p.up2]).unwrap();
    let key = SigningKey::from_bytes(&[42; 32]);
    let dir = TempDir::new("rejects");

    // The stand-in control API on a tokio runtime of its own.
    let (tx, rx) = mpsc::channel(16);
    let feed: Feed = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let grpc_addr = SocketAddr::from(([127, 0, 0, 1], p.grpc));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(ControlPlaneServer::new(StandIn(feed)))
            .serve(grpc_addr),
    );
    assert!(wait_for_port(grpc_addr, Duration::from_secs(5)));

    // A truncated snapshot file at start: rejected as malformed, the control stream then
    // supplies a good one.
    let good_bytes = sign(&key, &snapshot(1, &p, p.up1)).encode_to_vec();
    let truncated = dir.path().join("truncated.pb");
    std::fs::write(&truncated, &good_bytes[..good_bytes.len() / 2]).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_omnirelay-dataplane"));
    cmd.args(["--control", &format!("http://{grpc_addr}")])
        .args(["--public-key", &hex::encode(key.verifying_key().as_bytes())])
        .arg("--snapshot-file")
        .arg(&truncated)
        .args([
            "--admin",
            &format!("127.0.0.1:{}", p.dp_admin),
            "--access-log",
            "off",
            "--workers",
            "1",
        ]);
    let dp = ChildGuard::spawn("omnirelay-dataplane", cmd, &dir.path().join("dp.log")).unwrap();

    let send = |s: v1::SignedSnapshot| runtime.block_on(tx.send(Ok(s))).unwrap();
    send(sign(&key, &snapshot(1, &p, p.up1)));
    assert!(
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], p.proxy)),
            Duration::from_secs(10)
        ),
        "{}",
        dp.log()
    );
    assert!(wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], p.dp_admin)),
        Duration::from_secs(5)
    ));
    assert_eq!(
        metric(
            &p,
            "omnirelay_snapshot_rejected_total{reason=\"malformed\"}"
        ),
        1.0
    );
    assert!(
        dp.log().contains("snapshot does not decode"),
        "{}",
        dp.log()
    );
    let url = format!("http://127.0.0.1:{}/who", p.proxy);
    assert_eq!(get(&url), (200, b"one\n".to_vec()));

    // v2 with a corrupted signature (it would route to upstream two).
    let mut forged = sign(&key, &snapshot(2, &p, p.up2));
    forged.signature[0] ^= 0xff;
    send(forged);
    // v2 signed by another key.
    send(sign(
        &SigningKey::from_bytes(&[7; 32]),
        &snapshot(2, &p, p.up2),
    ));
    // v1 again: not newer.
    send(sign(&key, &snapshot(1, &p, p.up2)));
    // v2 needing a feature this binary lacks.
    let mut future = snapshot(2, &p, p.up2);
    future.required_capabilities.push("http9".into());
    send(sign(&key, &future));
    // v2 whose signed payload is cut short.
    let mut cut = sign(&key, &snapshot(2, &p, p.up2));
    cut.payload.truncate(cut.payload.len() - 3);
    send(cut);

    let expect = [
        ("bad_signature", 2.0, "signature does not verify"),
        ("unknown_key", 1.0, "signed by key"),
        ("stale", 1.0, "is not newer than the running version 1"),
        ("missing_capability", 1.0, "capability \"http9\""),
    ];
    for (label, n, logged) in expect {
        let series = format!("omnirelay_snapshot_rejected_total{{reason=\"{label}\"}}");
        assert!(
            wait_until(Duration::from_secs(5), || metric(&p, &series) == n),
            "{series} = {}, expected {n}\n{}",
            metric(&p, &series),
            dp.log()
        );
        assert!(
            dp.log().contains(logged),
            "no log line with {logged:?}:\n{}",
            dp.log()
        );
    }
    // Still serving snapshot 1 (upstream one).
    assert_eq!(metric(&p, "omnirelay_snapshot_version"), 1.0);
    assert_eq!(get(&url), (200, b"one\n".to_vec()));

    // A good v2 is then taken.
    send(sign(&key, &snapshot(2, &p, p.up2)));
    assert!(wait_until(Duration::from_secs(5), || metric(
        &p,
        "omnirelay_snapshot_version"
    ) == 2.0));
    assert_eq!(get(&url), (200, b"two\n".to_vec()));
    drop(dp);
    runtime.shutdown_background();
}
