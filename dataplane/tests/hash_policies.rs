//! Hash-based balancing through the real binary: the topology providers `main.rs` wires in
//! build the tables, so every request with one key reaches one upstream, keys spread over
//! both upstreams, and a snapshot that switches the policy builds the other provider's
//! table.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use common::{Stack, config, curl, write_config};
use omnirelay_test_support::{Capability, require_caps};

/// The stack's config with route "default" hashing on `x-user` onto cluster "both" (the
/// two nginx upstreams) balanced by `lb`.
fn hash_config(stack: &Stack, lb: &str) -> String {
    let p = stack.ports;
    let retry = r#"retry = { max_retries = 2, on = ["connect-failure"] }"#;
    let hashed = format!("{retry}\nhash_on = {{ header = \"x-user\" }}");
    let text = config(&p, "both").replace(retry, &hashed);
    assert!(text.contains("hash_on"), "the route's retry line changed");
    format!(
        "{text}\n[[clusters]]\nname = \"both\"\nlb = \"{lb}\"\n\
         endpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
        p.up1, p.up2
    )
}

/// Which upstream answered `/who` for `user`.
fn who(stack: &Stack, user: &str) -> String {
    let header = format!("x-user: {user}");
    let out = curl(&["-s", "-H", &header, &stack.url("/who")]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn hash_policies_pin_each_key_to_one_upstream() {
    require_caps!(Capability::Program("nginx"), Capability::Program("curl"));
    let stack = Stack::start();
    let users: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    for lb in ["ring_hash", "rendezvous"] {
        let v = stack.dp_version();
        write_config(&stack.config_path, &hash_config(&stack, lb));
        stack.wait_dp_version_above(v);
        let first: Vec<String> = users.iter().map(|u| who(&stack, u)).collect();
        assert!(
            first.iter().all(|w| w == "one" || w == "two"),
            "{lb}: {first:?}\n{}",
            stack.dataplane.log()
        );
        // Two equal-weight upstreams: 24 keys all on one side has odds of 2^-23.
        let spread = ["one", "two"].map(|w| first.iter().any(|f| f == w));
        assert_eq!(spread, [true, true], "{lb}: keys did not spread: {first:?}");
        for _ in 0..2 {
            let again: Vec<String> = users.iter().map(|u| who(&stack, u)).collect();
            assert_eq!(again, first, "{lb}: a key changed upstream");
        }
    }
}
