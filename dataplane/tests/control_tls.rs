//! The control connection over TLS, end to end with real processes: the control daemon with
//! `[control.tls]` (certificates made by a test CA), data planes that trust it with and
//! without a client certificate, one that trusts another CA, a plaintext one, curl looking
//! at the certificate served, and renewal by reload.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use omnirelay_test_support::{
    nginx::Nginx,
    pki::{TestCa, Usage},
    process::{ChildGuard, TempDir, free_port, wait_for_port, wait_until},
};

/// A stack whose control daemon serves gRPC over TLS; the data plane is started by each
/// test.
struct TlsStack {
    ports: Ports,
    _nginx: Nginx,
    control: ChildGuard,
    config_path: PathBuf,
    ca: TestCa,
    dir: TempDir,
}

impl TlsStack {
    /// `client_ca`: ask data planes for a certificate from the test CA (mutual TLS).
    fn start(client_ca: bool) -> TlsStack {
        let ports = Ports::new();
        let nginx = Nginx::start(&nginx_servers(&ports), &[ports.up1, ports.up2]).unwrap();
        let dir = TempDir::new("control-tls");
        let ca = TestCa::new("omnirelay test control CA").unwrap();
        ca.write_cert(&dir.path().join("ca.pem")).unwrap();
        ca.issue(
            &["127.0.0.1", "localhost"],
            Usage::Server,
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )
        .unwrap();
        ca.issue(
            &["dataplane-1"],
            Usage::Client,
            &dir.path().join("client.pem"),
            &dir.path().join("client.key"),
        )
        .unwrap();
        let config_path = dir.path().join("omnirelay.toml");
        std::fs::write(&config_path, Self::config(&ports, "one", client_ca)).unwrap();
        let control = start_control(&dir, &config_path, &ports);
        TlsStack {
            ports,
            _nginx: nginx,
            control,
            config_path,
            ca,
            dir,
        }
    }

    /// The stack's config routing to `cluster`, with `[control.tls]` in paths relative to
    /// the config file.
    fn config(ports: &Ports, cluster: &str, client_ca: bool) -> String {
        format!(
            "{}\n[control.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n{}",
            config(ports, cluster),
            if client_ca {
                "client_ca = \"ca.pem\"\n"
            } else {
                ""
            }
        )
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn https(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.grpc)
    }

    /// Starts a data plane on `control` with `args`; `tag` names its log file.
    fn dataplane(&self, tag: &str, control: &str, admin: u16, args: &[&str]) -> ChildGuard {
        ChildGuard::spawn(
            "omnirelay-dataplane",
            dataplane_command(&self.dir, control, admin, args),
            &self.dir.path().join(format!("dataplane-{tag}.log")),
        )
        .unwrap()
    }

    /// A data plane that must get no snapshot: it gives up after 2 s and exits non-zero.
    fn refused_dataplane(&self, tag: &str, control: &str, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["--wait", "2"]);
        let mut dp = self.dataplane(tag, control, free_port(), &all);
        let status = dp
            .wait_exit(Duration::from_secs(20))
            .expect("a data plane without a snapshot exits after --wait");
        assert!(!status.success(), "{tag}: {status}");
        let log = dp.log();
        assert!(log.contains("no valid snapshot within 2 s"), "{tag}: {log}");
        log
    }

    fn control_metric(&self, series: &str) -> f64 {
        let out = curl(&["-s", &self.control_admin("/metrics")]);
        metric(&String::from_utf8_lossy(&out.stdout), series).unwrap_or(0.0)
    }

    /// `POST /control/reload` on the control daemon.
    fn reload(&self) {
        let out = curl(&["-s", "-X", "POST", &self.control_admin("/control/reload")]);
        assert!(out.status.success());
    }

    fn control_admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.control_admin)
    }

    /// The subject of the certificate the control daemon's gRPC port presents (curl,
    /// trusting the test CA).
    fn served_subject(&self) -> String {
        let out = curl(&[
            "-sv",
            "--http2",
            "--max-time",
            "5",
            "--cacert",
            &self.path("ca.pem"),
            &self.https(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        err.lines()
            .find_map(|l| l.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
            .unwrap_or_else(|| panic!("curl showed no certificate:\n{err}"))
            .to_owned()
    }
}

const HANDSHAKE_FAILURES: &str = "omnirelay_control_tls_handshake_failures_total";

#[test]
fn mutual_tls_subscribes_a_data_plane_with_a_certificate_and_refuses_the_others() {
    let stack = TlsStack::start(true);
    assert!(
        stack.control.log().contains("grpc_tls=\"mutual\""),
        "{}",
        stack.control.log()
    );
    let https = stack.https();
    let (ca, cert, key) = (
        stack.path("ca.pem"),
        stack.path("client.pem"),
        stack.path("client.key"),
    );
    let trusted = stack.dataplane(
        "trusted",
        &https,
        stack.ports.dp_admin,
        &[
            "--control-ca",
            &ca,
            "--control-cert",
            &cert,
            "--control-key",
            &key,
        ],
    );
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], stack.ports.proxy));
    assert!(
        wait_for_port(proxy, Duration::from_secs(15)),
        "no snapshot over mutual TLS:\n{}",
        trusted.log()
    );
    let url = format!("http://127.0.0.1:{}/who", stack.ports.proxy);
    assert_eq!(get(&url), (200, b"one\n".to_vec()));

    // No client certificate: the control daemon refuses the handshake and says so.
    let before = stack.control_metric(HANDSHAKE_FAILURES);
    stack.refused_dataplane("no-cert", &https, &["--control-ca", &ca]);
    assert!(
        stack.control_metric(HANDSHAKE_FAILURES) > before,
        "handshake failures not counted"
    );
    assert!(
        stack
            .control
            .wait_for_log("peer sent no certificates", Duration::from_secs(5)),
        "{}",
        stack.control.log()
    );

    // A certificate from another CA, and trusting only that CA: the data plane refuses the
    // control daemon's certificate and names why.
    let other = TestCa::new("another CA").unwrap();
    let (other_ca, other_cert, other_key) = (
        stack.path("other-ca.pem"),
        stack.path("other.pem"),
        stack.path("other.key"),
    );
    other.write_cert(other_ca.as_ref()).unwrap();
    other
        .issue(
            &["dataplane-2"],
            Usage::Client,
            other_cert.as_ref(),
            other_key.as_ref(),
        )
        .unwrap();
    let log = stack.refused_dataplane(
        "other-ca",
        &https,
        &[
            "--control-ca",
            &other_ca,
            "--control-cert",
            &other_cert,
            "--control-key",
            &other_key,
        ],
    );
    assert!(log.contains("invalid peer certificate"), "{log}");

    // Trusting the control daemon but presenting a certificate of another CA: the control
    // daemon refuses it.
    let before = stack.control_metric(HANDSHAKE_FAILURES);
    stack.refused_dataplane(
        "foreign-cert",
        &https,
        &[
            "--control-ca",
            &ca,
            "--control-cert",
            &other_cert,
            "--control-key",
            &other_key,
        ],
    );
    assert!(stack.control_metric(HANDSHAKE_FAILURES) > before);

    // Plaintext against the TLS port: no snapshot, and counted by the control daemon.
    let before = stack.control_metric(HANDSHAKE_FAILURES);
    let plain = format!("http://127.0.0.1:{}", stack.ports.grpc);
    stack.refused_dataplane("plaintext", &plain, &[]);
    assert!(stack.control_metric(HANDSHAKE_FAILURES) > before);

    // The trusted data plane stayed subscribed: the next version reaches it.
    write_config(
        &stack.config_path,
        &TlsStack::config(&stack.ports, "two", true),
    );
    assert!(
        wait_until(Duration::from_secs(10), || get(&url)
            == (200, b"two\n".to_vec())),
        "the config change did not reach the data plane:\n{}",
        trusted.log()
    );
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload_and_broken_files_keep_the_old_one() {
    let mut stack = TlsStack::start(false);
    assert_eq!(stack.served_subject(), "CN=127.0.0.1");
    // Server-only TLS: a data plane needs the CA, no certificate of its own.
    let dp = stack.dataplane(
        "server-only",
        &stack.https(),
        stack.ports.dp_admin,
        &["--control-ca", &stack.path("ca.pem")],
    );
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], stack.ports.proxy));
    assert!(
        wait_for_port(proxy, Duration::from_secs(15)),
        "no snapshot over TLS:\n{}",
        dp.log()
    );

    stack
        .ca
        .issue(
            &["renewed.test", "127.0.0.1"],
            Usage::Server,
            stack.path("server.pem").as_ref(),
            stack.path("server.key").as_ref(),
        )
        .unwrap();
    stack.reload();
    assert_eq!(stack.served_subject(), "CN=renewed.test");

    // A restart on a config that does not load (a route to an unknown cluster): the
    // stored snapshot is served, over TLS as `[control]` says.
    stack.control.kill();
    let broken = TlsStack::config(&stack.ports, "nowhere", false);
    write_config(&stack.config_path, &broken);
    stack.control = start_control(&stack.dir, &stack.config_path, &stack.ports);
    assert!(
        stack.control.log().contains("grpc_tls=\"server\""),
        "{}",
        stack.control.log()
    );
    assert_eq!(stack.served_subject(), "CN=renewed.test");

    // A half-written certificate: the reload (the config still invalid) is refused,
    // counted, and the renewed certificate stays in service.
    std::fs::write(
        stack.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    stack.reload();
    assert_eq!(
        stack.control_metric("omnirelay_control_tls_reload_failures_total"),
        1.0
    );
    assert!(
        stack.control.log().contains("[control.tls] not reloaded"),
        "{}",
        stack.control.log()
    );
    assert_eq!(stack.served_subject(), "CN=renewed.test");

    // A config whose `[control]` does not read either: the daemon does not start rather
    // than guess where and how to serve.
    stack.control.kill();
    write_config(&stack.config_path, "[control\ngrpc_listen = 1\n");
    let mut cmd = std::process::Command::new(omnirelay_test_support::process::workspace_bin(
        "omnirelay-control",
    ));
    cmd.args(["run", "--config"])
        .arg(&stack.config_path)
        .arg("--state-dir")
        .arg(stack.dir.path().join("state"));
    let log = stack.dir.path().join("control-unreadable.log");
    let mut run = ChildGuard::spawn("omnirelay-control", cmd, &log).unwrap();
    let status = run
        .wait_exit(Duration::from_secs(15))
        .expect("the daemon stops when [control] cannot be read");
    assert!(!status.success());
    assert!(run.log().contains("cannot be read either"), "{}", run.log());
}

#[test]
fn a_tls_file_that_does_not_load_is_named_by_validate_and_stops_the_start() {
    let ports = Ports::new();
    let dir = TempDir::new("control-tls-bad");
    let config_path = dir.path().join("omnirelay.toml");
    std::fs::write(
        &config_path,
        format!(
            "{}\n[control.tls]\ncert = \"missing.pem\"\nkey = \"server.key\"\n",
            config(&ports, "one")
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("server.key"), "not a key\n").unwrap();
    let control = omnirelay_test_support::process::workspace_bin("omnirelay-control");
    let expect_named = |text: &str| {
        assert!(
            text.contains("control.tls.cert (") && text.contains("missing.pem): No such file"),
            "{text}"
        );
        assert!(
            text.contains("control.tls.key (") && text.contains("no private key read"),
            "{text}"
        );
    };
    let validate = std::process::Command::new(&control)
        .arg("validate")
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(validate.status.code(), Some(1));
    expect_named(&String::from_utf8_lossy(&validate.stderr));

    let mut cmd = std::process::Command::new(&control);
    cmd.args(["run", "--config"])
        .arg(&config_path)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let mut run =
        ChildGuard::spawn("omnirelay-control", cmd, &dir.path().join("control.log")).unwrap();
    let status = run
        .wait_exit(Duration::from_secs(15))
        .expect("the daemon stops when [control.tls] does not load");
    assert!(!status.success());
    expect_named(&run.log());
}
