//! Snapshot delivery end to end: live config changes under load, listeners added and
//! removed live, invalid configs, losing and regaining the control daemon, and snapshots
//! that must be rejected.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{process::Command, time::Duration};

use common::{Stack, config, curl, get, write_config};
use omnirelay_proto::v1::SignedSnapshot;
use omnirelay_test_support::{
    Capability,
    process::{free_port, wait_until},
    require_caps,
};
use prost::Message as _;

#[test]
fn a_config_change_under_load_switches_routing_with_zero_failed_requests() {
    require_caps!(Capability::Program("nginx"), Capability::Program("wrk"));
    let stack = Stack::start();
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
    let v = stack.dp_version();
    let wrk = std::thread::spawn({
        let url = stack.url("/who");
        move || {
            Command::new("wrk")
                .args(["-t1", "-c16", "-d5s", &url])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    write_config(&stack.config_path, &config(&stack.ports, "two"));
    let applied = stack.wait_dp_version_above(v);
    let out = wrk.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requests in"), "wrk did not run: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "failed requests during the switch:\n{text}"
    );
    assert!(
        !text.contains("Socket errors"),
        "socket errors during the switch:\n{text}"
    );
    assert_eq!(
        get(&stack.url("/who")),
        (200, b"two\n".to_vec()),
        "routing did not switch"
    );
    assert!(applied > v);
    // The control daemon reports what it published.
    let info = curl(&["-s", &stack.control_admin("/control/snapshot")]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["version"].as_u64(), Some(applied));
}

#[test]
fn a_listener_added_by_the_config_accepts_and_a_removed_one_stops() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let port = free_port();
    let extra = format!("http://127.0.0.1:{port}/who");
    let base = config(&stack.ports, "one");
    let with_extra =
        format!("{base}\n[[listeners]]\nname = \"extra\"\naddress = \"127.0.0.1:{port}\"\n");
    assert_eq!(get(&extra).0, 0, "nothing listens on the new port yet");

    let v = stack.dp_version();
    write_config(&stack.config_path, &with_extra);
    let v = stack.wait_dp_version_above(v);
    assert!(
        wait_until(Duration::from_secs(5), || get(&extra)
            == (200, b"one\n".to_vec())),
        "the added listener does not serve:\n{}",
        stack.dataplane.log()
    );
    // Each of the two workers bound its own socket for it.
    assert!(
        wait_until(Duration::from_secs(5), || {
            stack
                .dataplane
                .log()
                .matches("listener added by the configuration")
                .count()
                == 2
        }),
        "not every worker bound the added listener:\n{}",
        stack.dataplane.log()
    );
    for _ in 0..20 {
        assert_eq!(get(&extra), (200, b"one\n".to_vec()));
    }
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));

    write_config(&stack.config_path, &base);
    stack.wait_dp_version_above(v);
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        }),
        "the removed listener still accepts:\n{}",
        stack.dataplane.log()
    );
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
    let log = stack.dataplane.log();
    assert_eq!(
        log.matches("listener removed by the configuration").count(),
        2,
        "{log}"
    );
    // The workers were told of each snapshot (not left to periodic checks).
    assert!(!log.contains("snapshot notifications"), "{log}");
}

#[test]
fn an_invalid_config_is_rejected_with_every_error_and_traffic_continues() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let v = stack.dp_version();
    let bad =
        config(&stack.ports, "three").replace("name = \"one\"", "name = \"one\"\nlb = \"random\"");
    write_config(&stack.config_path, &bad);
    let out = curl(&["-s", "-X", "POST", &stack.control_admin("/control/reload")]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["outcome"], "invalid", "{reply}");
    let errors: Vec<String> = reply["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[0].cluster: unknown cluster \"three\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("clusters[0].lb: unknown policy \"random\"")),
        "{errors:?}"
    );
    assert!(
        stack
            .control
            .wait_for_log("config rejected", Duration::from_secs(5))
    );

    // `omnirelay-control validate` names the same errors and exits non-zero.
    let validate = Command::new(omnirelay_test_support::process::workspace_bin(
        "omnirelay-control",
    ))
    .arg("validate")
    .arg(&stack.config_path)
    .output()
    .unwrap();
    assert!(!validate.status.success());
    let stderr = String::from_utf8_lossy(&validate.stderr);
    assert!(stderr.contains("2 errors"), "{stderr}");
    assert!(
        stderr.contains("routes[0].cluster: unknown cluster \"three\""),
        "{stderr}"
    );

    // Traffic continues on the old snapshot.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.dp_version(), v);
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));

    // Fixing the config publishes the next version.
    write_config(&stack.config_path, &config(&stack.ports, "two"));
    stack.wait_dp_version_above(v);
    assert_eq!(get(&stack.url("/who")), (200, b"two\n".to_vec()));
}

#[test]
fn losing_the_control_daemon_keeps_traffic_and_a_restart_resumes_updates() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let mut stack = Stack::start();
    let v = stack.dp_version();
    stack.control.kill();
    for _ in 0..20 {
        assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
    }
    assert!(
        stack
            .dataplane
            .wait_for_log("control plane unreachable", Duration::from_secs(10))
    );
    // A change made while the daemon is down is picked up when it comes back.
    write_config(&stack.config_path, &config(&stack.ports, "two"));
    stack.restart_control();
    let now = stack.wait_dp_version_above(v);
    assert_eq!(
        now,
        v + 1,
        "the restarted daemon continues the version sequence"
    );
    assert_eq!(get(&stack.url("/who")), (200, b"two\n".to_vec()));
    assert!(stack.dataplane.is_running());
}

/// A control connection that goes silent without closing (the control host vanished, a
/// middlebox dropped the flow): the data plane's HTTP/2 pings (every 10 s, 5 s to answer)
/// find it dead, and it subscribes again over a new connection and takes the version
/// published meanwhile. TCP keepalive alone would not notice: the relay's kernel still
/// answers for the silent connection.
#[test]
fn a_silently_dead_control_connection_is_found_by_its_pings_and_replaced() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let mut relay = None;
    let stack = Stack::start_via(|grpc| {
        let r = common::Relay::start(grpc);
        let port = r.port;
        relay = Some(r);
        port
    });
    let relay = relay.unwrap();
    assert!(
        stack
            .dataplane
            .wait_for_log("subscribed to the control plane", Duration::from_secs(10))
    );
    let v = stack.dp_version();
    relay.blackhole_open_connections();
    write_config(&stack.config_path, &config(&stack.ports, "two"));
    // Within the ping interval and timeout (15 s), and a reconnect.
    let mut now = v;
    assert!(
        wait_until(Duration::from_secs(30), || {
            now = stack.dp_version();
            now > v
        }),
        "the data plane stayed at version {now} on a dead control connection:\n{}",
        stack.dataplane.log()
    );
    assert!(stack.dataplane.log().contains("control plane unreachable"));
    assert_eq!(get(&stack.url("/who")), (200, b"two\n".to_vec()));
}

/// With `--snapshot-cache`, a data plane restarted while the control daemon is away
/// serves the last version it had (without it, it would wait for the daemon and give up);
/// the cache follows each new version, and one that does not verify is passed over.
#[test]
fn a_data_plane_restarted_without_its_control_daemon_starts_from_its_snapshot_cache() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let cache_dir = omnirelay_test_support::process::TempDir::new("cache");
    let cache = cache_dir.path().join("snapshot.bin");
    let args = ["--snapshot-cache", cache.to_str().unwrap()];
    let mut stack = Stack::start_with_args(&args);
    let v = stack.dp_version();
    write_config(&stack.config_path, &config(&stack.ports, "two"));
    let v2 = stack.wait_dp_version_above(v);
    let cached = || {
        let bytes = std::fs::read(&cache).ok()?;
        Some(SignedSnapshot::decode(bytes.as_slice()).ok()?.version)
    };
    assert!(wait_until(Duration::from_secs(5), || cached() == Some(v2)));

    // The control daemon gone, the data plane restarted: it serves version v2 at once.
    stack.control.kill();
    stack.dataplane.kill();
    stack.dataplane = common::start_dataplane(&stack.dir, &stack.ports, &args);
    assert_eq!(stack.dp_version(), v2);
    assert_eq!(get(&stack.url("/who")), (200, b"two\n".to_vec()));
    assert!(
        stack
            .dataplane
            .log()
            .contains("starting from the snapshot cache")
    );

    // The daemon back: the next version arrives, and goes into the cache.
    write_config(&stack.config_path, &config(&stack.ports, "one"));
    stack.restart_control();
    let v3 = stack.wait_dp_version_above(v2);
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
    assert!(wait_until(Duration::from_secs(5), || cached() == Some(v3)));
    stack.dataplane.kill();
    stack.control.kill();
    stack.dataplane = common::start_dataplane(&stack.dir, &stack.ports, &args);
    assert_eq!(stack.dp_version(), v3, "the cache holds the latest version");

    // A damaged cache is passed over with the reason; the daemon serves the data plane.
    stack.dataplane.kill();
    let mut bytes = std::fs::read(&cache).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&cache, bytes).unwrap();
    stack.restart_control();
    stack.dataplane = common::start_dataplane(&stack.dir, &stack.ports, &args);
    assert!(stack.dataplane.log().contains("snapshot cache not used"));
    assert_eq!(stack.dp_version(), v3);
}

#[test]
fn sighup_reloads_the_config() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let v = stack.dp_version();
    // SIGHUP on an unchanged file reloads it and finds nothing new to publish.
    stack.control.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        stack
            .control
            .wait_for_log("SIGHUP: reloading", Duration::from_secs(5))
    );
    let metrics = curl(&["-s", &stack.control_admin("/metrics")]);
    let text = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let m = curl(&["-s", &stack.control_admin("/metrics")]);
            common::metric(
                &String::from_utf8_lossy(&m.stdout),
                "omnirelay_control_reloads_total{outcome=\"unchanged\"}",
            )
            .is_some_and(|n| n >= 1.0)
        }),
        "{text}"
    );
    assert_eq!(stack.dp_version(), v);
}

#[test]
fn a_snapshot_larger_than_the_transports_default_message_limit_arrives() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
    let v = stack.dp_version();
    // Enough routes for a snapshot well over gRPC's customary 4 MiB per message; the
    // first route now points at the other cluster, which shows the snapshot was taken.
    let mut big = config(&stack.ports, "two");
    let padding = "p".repeat(200);
    for i in 0..24_000 {
        big.push_str(&format!(
            "\n[[routes]]\nname = \"r{i}\"\npath_prefix = \"/{padding}/{i}\"\ncluster = \"one\"\n"
        ));
    }
    write_config(&stack.config_path, &big);
    let info = |stack: &Stack| {
        let out = curl(&["-s", &stack.control_admin("/control/snapshot")]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(20), || info(&stack)["version"]
            .as_u64()
            .is_some_and(|p| p > v)),
        "the big config was not published:\n{}",
        stack.control.log()
    );
    let bytes = info(&stack)["payload_bytes"].as_u64();
    assert!(
        bytes.is_some_and(|b| b > 5 << 20),
        "snapshot size {bytes:?}: not over the 4 MiB default"
    );
    assert!(
        wait_until(Duration::from_secs(20), || stack.dp_version() > v),
        "the data plane did not take the big snapshot:\n{}",
        stack.dataplane.log()
    );
    assert_eq!(get(&stack.url("/who")), (200, b"two\n".to_vec()));
}

/// The control daemon's snapshot history is lost (its SQLite store deleted, the key kept):
/// restarted, it numbers from 1 again, below what the data plane runs. It refuses the
/// subscription saying why, the data plane logs the refusal and keeps serving.
#[test]
fn a_daemon_that_lost_its_history_refuses_a_newer_data_plane_and_says_why() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let mut stack = Stack::start();
    let v = stack.dp_version();
    write_config(&stack.config_path, &config(&stack.ports, "two"));
    let v = stack.wait_dp_version_above(v);
    assert!(v >= 2);
    stack.control.kill();
    for file in ["snapshots.db", "snapshots.db-wal", "snapshots.db-shm"] {
        let _ = std::fs::remove_file(stack.dir.path().join("state").join(file));
    }
    stack.restart_control();
    assert!(
        stack.control.wait_for_log(
            "refused a data plane that runs a newer version",
            Duration::from_secs(15)
        ),
        "{}",
        stack.control.log()
    );
    assert!(
        stack.dataplane.wait_for_log(
            "the control plane refused the subscription: the data plane runs snapshot version",
            Duration::from_secs(15)
        ),
        "{}",
        stack.dataplane.log()
    );
    assert_eq!(stack.dp_version(), v, "the data plane keeps its snapshot");
    assert_eq!(get(&stack.url("/who")), (200, b"two\n".to_vec()));
}

/// SIGTERM stops the control daemon promptly while data planes hold their Watch streams
/// open (streams that never end on their own), and the data plane keeps serving.
#[test]
fn sigterm_stops_the_control_daemon_with_data_planes_subscribed() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let mut stack = Stack::start();
    assert!(
        stack
            .dataplane
            .wait_for_log("subscribed to the control plane", Duration::from_secs(10))
    );
    stack.control.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || !stack.control.is_running()),
        "the control daemon still runs 5 s after SIGTERM:\n{}",
        stack.control.log()
    );
    assert_eq!(get(&stack.url("/who")), (200, b"one\n".to_vec()));
}

/// A route removed and added back starts its series again from zero, also on workers
/// that served nothing in between: every worker takes each version as it arrives (and
/// drops the cells of removed routes), not at its next request.
#[test]
fn a_route_removed_and_added_back_counts_from_zero() {
    require_caps!(Capability::Program("nginx"));
    let stack = Stack::start();
    for _ in 0..20 {
        assert_eq!(get(&stack.url("/who")).0, 200);
    }
    let series = "omnirelay_requests_total{route=\"default\",cluster=\"one\",class=\"2xx\"}";
    assert_eq!(stack.dp_metric(series), Some(20.0));
    let original = config(&stack.ports, "one");
    let v = stack.dp_version();
    write_config(
        &stack.config_path,
        &original.replace("name = \"default\"", "name = \"renamed\""),
    );
    let v = stack.wait_dp_version_above(v);
    assert_eq!(
        stack.dp_metric(series),
        None,
        "a removed route left the scrape"
    );
    // Each worker takes the version without the route before the next one arrives.
    std::thread::sleep(Duration::from_millis(300));
    write_config(&stack.config_path, &original);
    stack.wait_dp_version_above(v);
    // No request in between: only taking the versions could have dropped the old cells.
    assert!(
        wait_until(Duration::from_secs(5), || stack.dp_metric(series)
            == Some(0.0)),
        "{series} = {:?}",
        stack.dp_metric(series)
    );
}
