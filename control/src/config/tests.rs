use super::*;

const GOOD: &str = r#"
[control]
grpc_listen = "127.0.0.1:7900"
admin_listen = "127.0.0.1:7901"

[[listeners]]
name = "public"
address = "127.0.0.1:8080"
limits = { max_header_bytes = 32768 }
timeouts = { idle_ms = 90000, head_ms = 5000 }

[[routes]]
name = "api"
hosts = ["API.example.com", "*.internal"]
path_prefix = "/api/"
headers = [{ name = "X-Canary", exact = "1" }]
cluster = "api"
retry = { max_retries = 2, on = ["connect-failure", "5xx"] }
hash_on = { header = "x-user" }

[[routes]]
name = "default"
cluster = "web"

[[clusters]]
name = "api"
lb = "ring_hash"
endpoints = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]
timeouts = { connect_ms = 500 }

[[clusters]]
name = "web"
endpoints = ["[::1]:9003"]

[[budgets]]
name = "per-source"
listener = "public"
rate_per_second = 1000
burst = 200
"#;

#[test]
fn a_good_config_parses_into_the_model() {
    let c = parse(GOOD, "good.toml").unwrap();
    assert_eq!(c.control.grpc_listen.port(), 7900);
    assert_eq!(c.listeners[0].limits.max_header_bytes, 32768);
    assert_eq!(c.listeners[0].limits.max_headers, 100, "default kept");
    assert_eq!(
        c.listeners[0].timeouts,
        ClientTimeouts {
            idle_ms: 90000,
            head_ms: 5000
        }
    );
    let api = &c.routes[0];
    assert_eq!(api.hosts, vec!["api.example.com", "*.internal"]);
    assert_eq!(api.path, PathMatch::Prefix("/api/".into()));
    assert_eq!(api.headers[0].name, "x-canary");
    assert_eq!(api.headers[0].condition, HeaderCondition::Exact("1".into()));
    assert!(api.retry.on_5xx && api.retry.on_connect_failure && !api.retry.on_timeout);
    assert_eq!(api.retry.max_retries, 2);
    assert_eq!(api.hash_on, HashOn::Header("x-user".into()));
    assert_eq!(c.routes[1].path, PathMatch::Prefix("/".into()));
    assert_eq!(c.clusters[0].lb, LbPolicy::RingHash);
    assert_eq!(c.clusters[0].endpoints[1].weight, 3);
    assert_eq!(c.clusters[0].timeouts.connect_ms, 500);
    assert_eq!(c.clusters[1].endpoints[0].address.to_string(), "[::1]:9003");
    assert_eq!(c.budgets[0].burst, 200);
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../omnirelay.example.toml");
    parse(text, "omnirelay.example.toml").unwrap();
}

#[test]
fn every_error_is_reported_with_its_path() {
    let bad = r#"
[[listeners]]
name = "public"
address = "localhost"
routes = ["api", "nope"]
colour = "blue"
timeouts = { idle_ms = 0, heads_ms = 5 }

[[routes]]
name = "api"
path_prefix = "api"
cluster = "missing"
retry = { max_retries = 99, on = ["always"] }

[[routes]]
name = "api"
cluster = "web"
headers = [{ name = "Bad Header", exact = "x" }]

[[clusters]]
name = "web"
lb = "random"
endpoints = ["127.0.0.1:80", "nowhere", { address = "127.0.0.1:81", weight = 0 }, { address = "127.0.0.1:80" }]

[[clusters]]
name = "empty"
endpoints = []

[[budgets]]
name = "b"
listener = "private"

[[listeners]]
name = "second"
address = "127.0.0.1:8081"
routes = []
limits = { max_body_bytes = 0 }

[[routes]]
name = ""
cluster = ""
"#;
    let err = parse(bad, "bad.toml").unwrap_err();
    let text: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
    let expect = [
        "listeners[0].address: \"localhost\" is not an ip:port address",
        "listeners[0].colour: unknown field",
        "listeners[0].timeouts.idle_ms: 0 is out of range 1..=86400000",
        "listeners[0].timeouts.heads_ms: unknown field",
        "routes[0].path_prefix: \"api\" must start with '/'",
        "routes[0].retry.max_retries: 99 is out of range 0..=10",
        "routes[0].retry.on[0]: unknown retry condition \"always\"",
        "routes[1].headers[0].name: \"bad header\" is not a valid header name",
        "clusters[0].lb: unknown policy \"random\"",
        "clusters[0].endpoints[1]: \"nowhere\" is not an ip:port address",
        "clusters[0].endpoints[2].weight: 0 is out of range 1..=10000",
        "clusters[1].endpoints: empty",
        "clusters[0].endpoints[3]: 127.0.0.1:80 is already endpoints[0]",
        "listeners[1].routes: empty",
        "listeners[1].limits.max_body_bytes: 0 is out of range 1..=",
        "routes[2].name: empty (required)",
        "routes[2].cluster: empty (required)",
        "budgets[0].rate_per_second: missing (required)",
        "routes[1].name: duplicate name \"api\" (also routes[0])",
        "routes[0].cluster: unknown cluster \"missing\"",
        "listeners[0].routes[1]: unknown route \"nope\"",
        "budgets[0].listener: unknown listener \"private\"",
    ];
    for e in expect {
        assert!(
            text.iter().any(|t| t.starts_with(e)),
            "missing error {e:?} in:\n{}",
            text.join("\n")
        );
    }
    assert_eq!(
        text.len(),
        expect.len(),
        "unexpected extra errors:\n{}",
        text.join("\n")
    );
    let rendered = err.to_string();
    assert!(rendered.starts_with("bad.toml: 22 errors"), "{rendered}");
}

#[test]
fn invalid_toml_names_line_and_column() {
    let err = parse("[[listeners]]\nname = \"a\"\naddress = \n", "x.toml").unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert!(
        err.errors[0].path.starts_with("line 3"),
        "{:?}",
        err.errors[0]
    );
    assert!(err.errors[0].message.contains("invalid TOML"));
}

#[test]
fn wrong_types_are_named() {
    let err = parse(
        "[[listeners]]\nname = 5\naddress = \"127.0.0.1:1\"\nroutes = \"a\"\n",
        "t.toml",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("listeners[0].name: expected a string, found an integer"),
        "{text}"
    );
    assert!(
        text.contains("listeners[0].routes: expected an array of strings, found a string"),
        "{text}"
    );
}

#[test]
fn a_config_without_listeners_is_rejected() {
    let err = parse("", "empty.toml").unwrap_err();
    assert!(err.to_string().contains("at least one [[listeners]]"));
}

#[test]
fn kernel_section_and_budget_overrides_parse_and_their_errors_name_the_field() {
    let good = format!(
        "{GOOD}\n[kernel]\ninterfaces = [\"eth0\", \"eth1\"]\nattach_mode = \"generic\"\n\
         allow = [\"192.0.2.0/24\", \"2001:db8::/32\"]\ndeny = [\"198.51.100.7\"]\n\
         malformed = \"drop\"\nsteering = true\nworker_weights = [1, 0, 2]\n"
    )
    .replace(
        "burst = 200",
        "burst = 200\noverrides = [{ prefix = \"10.0.0.0/8\", rate_per_second = 5000 }]",
    );
    let c = parse(&good, "good.toml").unwrap();
    assert_eq!(c.kernel.interfaces, ["eth0", "eth1"]);
    assert_eq!(c.kernel.attach_mode, XdpAttach::Generic);
    assert_eq!(c.kernel.allow[1].to_string(), "2001:db8::/32");
    assert_eq!(c.kernel.deny[0].to_string(), "198.51.100.7/32");
    assert!(c.kernel.drop_malformed && c.kernel.steering);
    assert_eq!(c.kernel.worker_weights, [1, 0, 2]);
    assert_eq!(c.budgets[0].overrides[0].prefix.to_string(), "10.0.0.0/8");
    assert_eq!(c.kernel.pin_dir, std::path::Path::new(DEFAULT_PIN_DIR));

    let bad = format!(
        "{GOOD}\n[[budgets]]\nname = \"again\"\nlistener = \"public\"\nrate_per_second = 20000000\n\
         overrides = [{{ prefix = \"10.0.0.1/8\", rate_per_second = 1 }}, \"x\"]\n\
         [kernel]\nattach_mode = \"turbo\"\ndeny = [\"10.0.0.0/33\", \"nope\"]\n\
         malformed = \"ignore\"\npin_dir = \"relative\"\nworker_weights = [-1]\n\
         interfaces = [\"bad name\"]\n"
    );
    let err = parse(&bad, "bad.toml").unwrap_err();
    let text: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
    for e in [
        "budgets[1].rate_per_second: 20000000 is out of range 1..=10000000",
        "budgets[1].overrides[0].prefix: \"10.0.0.1/8\" has host bits set",
        "budgets[1].overrides[1]: expected a table",
        "budgets[1].listener: listener \"public\" already has a budget (budgets[0])",
        "kernel.attach_mode: unknown mode \"turbo\"",
        "kernel.deny[0]: \"10.0.0.0/33\": prefix length must be 0..=32",
        "kernel.deny[1]: \"nope\" is not an address prefix",
        "kernel.malformed: unknown policy \"ignore\"",
        "kernel.pin_dir: \"relative\" must be an absolute path",
        "kernel.worker_weights[0]: expected a weight in 0..=1000000",
        "kernel.interfaces[0]: \"bad name\" is not an interface name",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(e)),
            "missing error {e:?} in:\n{}",
            text.join("\n")
        );
    }
}

#[test]
fn retry_on_timeout_needs_a_per_try_timeout() {
    let without = GOOD.replace(
        r#"on = ["connect-failure", "5xx"]"#,
        r#"on = ["connect-failure", "timeout"]"#,
    );
    let message = error_at(&without, "routes[0].retry.on[1]");
    assert!(message.contains("per_try_timeout_ms"), "{message}");
    let with = GOOD.replace(
        r#"on = ["connect-failure", "5xx"]"#,
        r#"on = ["timeout"], per_try_timeout_ms = 250"#,
    );
    let cfg = parse(&with, "t.toml").unwrap();
    let retry = &cfg.routes[0].retry;
    assert!(retry.on_timeout && !retry.on_connect_failure);
    assert_eq!(retry.per_try_timeout_ms, 250);
}

/// `gateway-error` and `retriable-status-codes` (with `statuses`, failures only), each
/// without the other's field refused by name.
#[test]
fn retry_on_named_statuses_and_gateway_errors() {
    let with = |retry: &str| GOOD.replace(r#"on = ["connect-failure", "5xx"]"#, retry);
    let cfg = parse(
        &with(r#"on = ["gateway-error", "retriable-status-codes"], statuses = [409, 429]"#),
        "t.toml",
    )
    .unwrap();
    let retry = &cfg.routes[0].retry;
    assert!(retry.on_gateway_error && !retry.on_5xx && !retry.on_connect_failure);
    assert_eq!(retry.statuses, [409, 429]);
    let at = |retry: &str, path: &str| error_at(&with(retry), path);
    assert!(
        at(
            r#"on = ["retriable-status-codes"]"#,
            "routes[0].retry.on[0]"
        )
        .contains("needs statuses")
    );
    assert!(
        at(
            r#"on = ["5xx"], statuses = [409]"#,
            "routes[0].retry.statuses"
        )
        .contains("only with \"retriable-status-codes\"")
    );
    for bad in ["200", "399", "600", "\"409\""] {
        let retry = format!(r#"on = ["retriable-status-codes"], statuses = [409, {bad}]"#);
        assert!(
            at(&retry, "routes[0].retry.statuses[1]").contains("not a status of a failure"),
            "{bad}"
        );
    }
    assert!(at(r#"on = ["reset"]"#, "routes[0].retry.on[0]").contains("\"gateway-error\""));
    let named =
        |statuses: &str| format!(r#"on = ["retriable-status-codes"], statuses = {statuses}"#);
    assert!(at(&named("[409, 409]"), "routes[0].retry.statuses[1]").contains("named twice"));
    assert!(at(&named("[]"), "routes[0].retry.statuses").contains("empty"));
    assert!(at(&named("409"), "routes[0].retry.statuses").contains("expected an array"));
    let many: Vec<String> = (400..433).map(|s| s.to_string()).collect();
    let many = named(&format!("[{}]", many.join(", ")));
    assert!(at(&many, "routes[0].retry.statuses").contains("33 statuses; at most 32"));
}

#[test]
fn a_listener_on_port_zero_or_on_the_control_daemons_port_is_refused() {
    let zero = GOOD.replace("address = \"127.0.0.1:8080\"", "address = \"127.0.0.1:0\"");
    let message = error_at(&zero, "listeners[0].address");
    assert!(message.starts_with("port 0"), "{message}");
    // The admin API listens on 127.0.0.1:7901; a wildcard listener on that port collides.
    let wildcard = GOOD.replace("address = \"127.0.0.1:8080\"", "address = \"0.0.0.0:7901\"");
    let message = error_at(&wildcard, "listeners[0].address");
    assert!(message.contains("control daemon"), "{message}");
    // Another address on the same port does not.
    let other = GOOD.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.2:7901\"",
    );
    assert!(parse(&other, "t.toml").is_ok());
}

#[test]
fn prefix_lists_larger_than_half_a_kernel_map_are_refused() {
    let prefixes: Vec<String> = (0..8193u32)
        .map(|i| format!("\"10.{}.{}.{}/32\"", i >> 16, (i >> 8) & 0xff, i & 0xff))
        .collect();
    let text = format!("{GOOD}\n[kernel]\ndeny = [{}]\n", prefixes.join(", "));
    assert_eq!(
        error_at(&text, "kernel.deny"),
        "8193 prefixes; at most 8192"
    );
    let fits = format!(
        "{GOOD}\n[kernel]\ndeny = [{}]\n",
        prefixes[..8192].join(", ")
    );
    assert!(parse(&fits, "t.toml").is_ok());
}

/// The message of the error `text` gets at `path` (fails listing them all when none).
fn error_at(text: &str, path: &str) -> String {
    let err = parse(text, "t.toml").unwrap_err();
    err.errors
        .iter()
        .find(|e| e.path == path)
        .map(|e| e.message.clone())
        .unwrap_or_else(|| panic!("no error at {path}:\n{err}"))
}

#[test]
fn route_hosts_need_a_name_in_every_label() {
    let with_host = |h: &str| GOOD.replace("\"API.example.com\"", &format!("{h:?}"));
    for bad in [".", "...", "a..b", "*.", "-x.com ", "a/b"] {
        let msg = error_at(&with_host(bad), "routes[0].hosts[0]");
        assert!(msg.contains("is not a host name"), "{bad}: {msg}");
    }
    for good in ["example.com.", "*.example.com", "a-b.c9"] {
        assert!(parse(&with_host(good), "t.toml").is_ok(), "{good}");
    }
}

#[test]
fn preserve_request_id_is_a_boolean_that_defaults_to_true() {
    let c = parse(GOOD, "t.toml").unwrap();
    assert!(c.listeners[0].preserve_request_id);
    assert!(!c.listeners[0].merge_slashes, "off by default, as in Envoy");
    let off = GOOD.replace(
        "timeouts = { idle_ms = 90000, head_ms = 5000 }",
        "timeouts = { idle_ms = 90000, head_ms = 5000 }\npreserve_request_id = false",
    );
    assert!(!parse(&off, "t.toml").unwrap().listeners[0].preserve_request_id);
    let typo = off.replace("= false", "= \"no\"");
    let msg = error_at(&typo, "listeners[0].preserve_request_id");
    assert!(msg.contains("expected a boolean"), "{msg}");
}

#[test]
fn control_tls_names_its_files_and_its_errors() {
    let with_tls = |table: &str| {
        GOOD.replace(
            "admin_listen = \"127.0.0.1:7901\"\n",
            &format!("admin_listen = \"127.0.0.1:7901\"\ntls = {table}\n"),
        )
    };
    assert_eq!(parse(GOOD, "t.toml").unwrap().control.tls, None);
    let c = parse(
        &with_tls(r#"{ cert = "c.pem", key = "/etc/k.pem", client_ca = "ca.pem" }"#),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.control.tls,
        Some(ControlTls {
            cert: "c.pem".into(),
            key: "/etc/k.pem".into(),
            client_ca: Some("ca.pem".into()),
        })
    );
    let bad = with_tls(r#"{ cert = "", client_ca = "", ca = "x" }"#);
    assert!(error_at(&bad, "control.tls.cert").contains("empty"));
    assert!(error_at(&bad, "control.tls.key").contains("missing"));
    assert!(error_at(&bad, "control.tls.client_ca").contains("empty"));
    assert!(error_at(&bad, "control.tls.ca").contains("unknown field"));
    // The section alone reads although the rest of the document does not.
    let broken_elsewhere = with_tls(r#"{ cert = "c.pem", key = "k.pem" }"#)
        .replace("cluster = \"web\"", "cluster = \"nowhere\"");
    assert!(parse(&broken_elsewhere, "t.toml").is_err());
    let control = parse_control(&broken_elsewhere, "t.toml").unwrap();
    assert_eq!(control.grpc_listen.port(), 7900);
    assert_eq!(control.tls.unwrap().key, std::path::PathBuf::from("k.pem"));
    assert!(parse_control(&bad, "t.toml").is_err());
}

#[test]
fn a_route_rewrite_names_its_bad_fields() {
    let with = |rewrite: &str| {
        GOOD.replace(
            "name = \"default\"\ncluster = \"web\"",
            &format!("name = \"default\"\ncluster = \"web\"\nrewrite = {rewrite}"),
        )
    };
    let c = parse(
        &with(r#"{ prefix = "/v2/", host = "api.internal:8080" }"#),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.routes[1].rewrite,
        Rewrite {
            prefix: Some("/v2/".into()),
            host: Some("api.internal:8080".into()),
        }
    );
    assert_eq!(c.routes[0].rewrite, Rewrite::default());
    let bad = with(r#"{ prefix = "v2 x", host = "a b" }"#);
    assert!(error_at(&bad, "routes[1].rewrite.prefix").contains("not a path start"));
    assert!(error_at(&bad, "routes[1].rewrite.host").contains("not a Host value"));
    assert!(error_at(&with("{}"), "routes[1].rewrite").contains("set prefix, host or both"));
}

#[test]
fn a_cluster_max_requests_is_a_positive_limit_or_none() {
    assert_eq!(parse(GOOD, "t.toml").unwrap().clusters[0].max_requests, 0);
    let with = |v: &str| {
        GOOD.replace(
            "endpoints = [\"[::1]:9003\"]",
            &format!("endpoints = [\"[::1]:9003\"]\nmax_requests = {v}"),
        )
    };
    assert_eq!(
        parse(&with("100"), "t.toml").unwrap().clusters[1].max_requests,
        100
    );
    assert!(error_at(&with("0"), "clusters[1].max_requests").contains("out of range"));
}

#[test]
fn route_header_edits_refuse_fields_the_proxy_owns_and_bad_values() {
    let with = |edits: &str| {
        GOOD.replace(
            "name = \"default\"\ncluster = \"web\"",
            &format!("name = \"default\"\ncluster = \"web\"\n{edits}"),
        )
    };
    let c = parse(
        &with(
            "request_headers = { set = { \"X-Gateway\" = \"edge\" }, remove = [\"X-Debug\"] }\n\
             response_headers = { remove = [\"server\"] }",
        ),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.routes[1].request_headers,
        HeaderEdits {
            set: vec![("x-gateway".into(), "edge".into())],
            remove: vec!["x-debug".into()],
        }
    );
    assert_eq!(
        c.routes[1].response_headers.remove,
        vec!["server".to_owned()]
    );
    assert!(c.routes[0].request_headers.is_empty());
    let bad = with(
        "request_headers = { set = { \"host\" = \"x\", \"x-a\" = \" padded\" }, \
         remove = [\"content-length\", \"x-b\"] }\n\
         response_headers = { set = { \"x-b\" = \"1\" }, remove = [\"x-b\"] }",
    );
    let msg = error_at(&bad, "routes[1].request_headers.set.\"host\"");
    assert!(msg.contains("the proxy's own"), "{msg}");
    let msg = error_at(&bad, "routes[1].request_headers.set.\"x-a\"");
    assert!(msg.contains("whitespace"), "{msg}");
    let msg = error_at(&bad, "routes[1].request_headers.remove[0]");
    assert!(msg.contains("framing or hop-by-hop"), "{msg}");
    let msg = error_at(&bad, "routes[1].response_headers.remove");
    assert!(msg.contains("also set"), "{msg}");
    let twice = with("response_headers = { set = { \"X-A\" = \"1\", \"x-a\" = \"2\" } }");
    assert!(error_at(&twice, "routes[1].response_headers.set").contains("set twice"));
}

/// A route answers itself with `direct_response` or `redirect` instead of a cluster:
/// exactly one of the three, each field checked, and the fields only a route to a
/// cluster uses refused beside them.
#[test]
fn a_route_answers_itself_with_a_direct_response_or_a_redirect() {
    let with = |action: &str| {
        GOOD.replace(
            "name = \"default\"\ncluster = \"web\"",
            &format!("name = \"default\"\n{action}"),
        )
    };
    let c = parse(
        &with(r#"direct_response = { status = 403, body = "no\n" }"#),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.routes[1].answer,
        Some(Answer::Direct(DirectResponse {
            status: 403,
            body: "no\n".into(),
            content_type: "text/plain".into(),
        }))
    );
    assert_eq!(c.routes[1].cluster, "");
    assert_eq!(c.routes[0].answer, None);
    let c = parse(
        &with(
            r#"redirect = { scheme = "HTTPS", port = 8443, prefix = "/v2/", strip_query = true }"#,
        ),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.routes[1].answer,
        Some(Answer::Redirect(Redirect {
            scheme: Some("https".into()),
            port: Some(8443),
            prefix: Some("/v2/".into()),
            code: 301,
            strip_query: true,
            ..Redirect::default()
        }))
    );

    let at = |action: &str, path: &str| error_at(&with(action), path);
    assert!(
        at("", "routes[1].cluster").contains("set cluster, weighted_clusters, direct_response")
    );
    assert!(
        at(
            "cluster = \"web\"\nredirect = { path = \"/\" }",
            "routes[1].cluster"
        )
        .contains("not several")
    );
    assert!(
        at(
            "redirect = { path = \"/\" }\nretry = { max_retries = 1 }",
            "routes[1].retry"
        )
        .contains("only a route to clusters")
    );
    let d = |fields: &str| with(&format!("direct_response = {{ {fields} }}"));
    assert!(error_at(&d("body = \"x\""), "routes[1].direct_response.status").contains("missing"));
    assert!(
        error_at(&d("status = 199"), "routes[1].direct_response.status").contains("out of range")
    );
    assert!(
        error_at(
            &d("status = 204, body = \"x\""),
            "routes[1].direct_response.body"
        )
        .contains("no body")
    );
    assert!(
        error_at(
            &d("status = 200, content_type = \"a\\nb\""),
            "routes[1].direct_response.content_type"
        )
        .contains("line break")
    );
    let big = format!("status = 200, body = \"{}\"", "x".repeat(64 * 1024 + 1));
    assert!(error_at(&d(&big), "routes[1].direct_response.body").contains("at most 65536"));
    let r = |fields: &str| with(&format!("redirect = {{ {fields} }}"));
    assert!(error_at(&r("code = 300"), "routes[1].redirect").contains("would loop"));
    assert!(error_at(&r("scheme = \"http\""), "routes[1].redirect").contains("would loop"));
    assert!(
        error_at(&r("host = \"a.example:\""), "routes[1].redirect.host").contains("give a port")
    );
    assert!(
        error_at(
            &d("status = 205, body = \"x\""),
            "routes[1].direct_response.body"
        )
        .contains("no body")
    );
    assert!(
        error_at(&r("path = \"/\", code = 300"), "routes[1].redirect.code").contains("301, 302")
    );
    assert!(error_at(&r("scheme = \"ftp\""), "routes[1].redirect.scheme").contains("\"https\""));
    assert!(
        error_at(&r("host = \"a.example:80\""), "routes[1].redirect.host").contains("give a port")
    );
    assert!(error_at(&r("port = 0"), "routes[1].redirect.port").contains("out of range"));
    assert!(error_at(&r("path = \"x\""), "routes[1].redirect.path").contains("not a path start"));
    assert!(
        error_at(
            &r("path = \"/a\", prefix = \"/b\""),
            "routes[1].redirect.prefix"
        )
        .contains("not both")
    );
}

/// `weighted_clusters` splits a route's requests: each name must be a cluster, once,
/// weights 0-10000 (1 by default) with at least one above 0, and not beside `cluster`.
#[test]
fn weighted_clusters_name_known_clusters_with_weights() {
    let with = |split: &str| {
        GOOD.replace(
            "name = \"default\"\ncluster = \"web\"",
            &format!("name = \"default\"\nweighted_clusters = {split}"),
        )
    };
    let c = parse(
        &with(r#"[{ name = "web", weight = 90 }, { name = "api" }]"#),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        c.routes[1].weighted_clusters,
        [
            WeightedCluster {
                name: "web".into(),
                weight: 90
            },
            WeightedCluster {
                name: "api".into(),
                weight: 1
            }
        ]
    );
    assert_eq!(c.routes[1].cluster, "");
    let at = |split: &str, path: &str| error_at(&with(split), path);
    assert!(at("[]", "routes[1].weighted_clusters").contains("empty"));
    assert!(
        at(
            r#"[{ name = "nope" }]"#,
            "routes[1].weighted_clusters[0].name"
        )
        .contains("unknown cluster \"nope\"")
    );
    assert!(
        at(
            r#"[{ name = "web" }, { name = "web" }]"#,
            "routes[1].weighted_clusters[1].name"
        )
        .contains("also weighted_clusters[0]")
    );
    assert!(
        at(
            r#"[{ name = "web", weight = 0 }]"#,
            "routes[1].weighted_clusters"
        )
        .contains("every weight is 0")
    );
    assert!(
        at(
            r#"[{ name = "web", weight = 10001 }]"#,
            "routes[1].weighted_clusters[0].weight"
        )
        .contains("out of range")
    );
    let both = GOOD.replace(
        "name = \"default\"\ncluster = \"web\"",
        "name = \"default\"\ncluster = \"web\"\nweighted_clusters = [{ name = \"api\" }]",
    );
    assert!(error_at(&both, "routes[1].cluster").contains("not several"));
    let unsplit = GOOD.replace(
        "name = \"default\"\ncluster = \"web\"",
        "name = \"default\"\ncluster = \"web\"\nsplit_by_hash = true",
    );
    assert!(
        error_at(&unsplit, "routes[1].split_by_hash")
            .contains("only a route with weighted_clusters")
    );
}

/// A cluster's `health_check`: a request target, defaults Envoy-like, a timeout within
/// the interval, and each bad field named.
#[test]
fn a_health_check_names_its_bad_fields() {
    let with = |check: &str| {
        GOOD.replace(
            "endpoints = [\"[::1]:9003\"]",
            &format!("endpoints = [\"[::1]:9003\"]\nhealth_check = {check}"),
        )
    };
    let c = parse(&with(r#"{ path = "/healthz?full=1" }"#), "t.toml").unwrap();
    assert_eq!(
        c.clusters[1].health_check,
        Some(HealthCheck {
            protocol: HealthCheckProtocol::Http,
            path: "/healthz?full=1".into(),
            host: String::new(),
            expected_statuses: Vec::new(),
            interval_ms: 5000,
            timeout_ms: 1000,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        })
    );
    assert_eq!(c.clusters[0].health_check, None);
    let at = |check: &str, path: &str| error_at(&with(check), path);
    assert!(at("{}", "clusters[1].health_check.path").contains("missing"));
    assert!(
        at(r#"{ path = "healthz" }"#, "clusters[1].health_check.path")
            .contains("not a request target")
    );
    assert!(
        at(
            r#"{ path = "/h", host = "a b" }"#,
            "clusters[1].health_check.host"
        )
        .contains("not a Host value")
    );
    assert!(
        at(
            r#"{ path = "/h", interval_ms = 500, timeout_ms = 600 }"#,
            "clusters[1].health_check.timeout_ms"
        )
        .contains("longer than interval_ms")
    );
    assert!(
        at(
            r#"{ path = "/h", unhealthy_threshold = 0 }"#,
            "clusters[1].health_check.unhealthy_threshold"
        )
        .contains("out of range")
    );
}

/// A health check's `expected_statuses` (statuses and ranges) and `protocol = "tcp"`
/// (which takes no HTTP fields); each bad value named by its path.
#[test]
fn health_check_statuses_and_tcp_checks() {
    let with = |check: &str| {
        GOOD.replace(
            "endpoints = [\"[::1]:9003\"]",
            &format!("endpoints = [\"[::1]:9003\"]\nhealth_check = {check}"),
        )
    };
    let check = |text: &str| {
        parse(&with(text), "t.toml").unwrap().clusters[1]
            .health_check
            .clone()
            .unwrap()
    };
    let http = check(r#"{ path = "/h", expected_statuses = [200, "204", "300 - 399"] }"#);
    assert_eq!(http.expected_statuses, [(200, 200), (204, 204), (300, 399)]);
    let tcp = check(r#"{ protocol = "tcp", interval_ms = 2000 }"#);
    assert_eq!(tcp.protocol, HealthCheckProtocol::Tcp);
    assert_eq!(
        (tcp.path.as_str(), tcp.interval_ms, tcp.timeout_ms),
        ("", 2000, 1000)
    );
    let at = |check: &str, path: &str| error_at(&with(check), path);
    let statuses = "clusters[1].health_check.expected_statuses";
    let bad_values = [
        "100",
        "\"199\"",
        "600",
        "65736",
        "\"299-200\"",
        "\"200-\"",
        "\" - \"",
        "\"2xx\"",
        "true",
    ];
    for bad in bad_values {
        let text = format!("{{ path = \"/h\", expected_statuses = [200, {bad}] }}");
        assert!(
            at(&text, &format!("{statuses}[1]")).contains("not a status (200-599)"),
            "{bad}"
        );
    }
    assert!(at(r#"{ path = "/h", expected_statuses = [] }"#, statuses).contains("empty"));
    let many = format!(
        "{{ path = \"/h\", expected_statuses = [{}] }}",
        vec!["200"; 33].join(", ")
    );
    assert!(at(&many, statuses).contains("33 entries; at most 32"));
    for key in ["path", "host", "expected_statuses"] {
        let text = match key {
            "expected_statuses" => r#"{ protocol = "tcp", expected_statuses = [200] }"#.to_owned(),
            _ => format!("{{ protocol = \"tcp\", {key} = \"/h\" }}"),
        };
        let got = at(&text, &format!("clusters[1].health_check.{key}"));
        assert!(got.contains("only for protocol = \"http\""), "{key}: {got}");
    }
    assert!(
        at(
            r#"{ protocol = "udp" }"#,
            "clusters[1].health_check.protocol"
        )
        .contains("unknown protocol \"udp\"")
    );
    // One error each, not a second one that follows from it.
    let only = |check: &str| {
        let err = parse(&with(check), "t.toml").unwrap_err();
        err.errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
    };
    let errors = only(r#"{ protocol = "udp", path = "/h" }"#);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let errors = only(r#"{ path = "/h", expected_statuses = 200 }"#);
    assert_eq!(
        errors,
        ["clusters[1].health_check.expected_statuses: expected an array, found an integer"]
    );
}

/// A route's `rate_limit`: a rate, and a burst that defaults to it.
#[test]
fn a_route_rate_limit_has_a_rate_and_a_burst() {
    let with = |limit: &str| {
        GOOD.replace(
            "name = \"default\"\ncluster = \"web\"",
            &format!("name = \"default\"\ncluster = \"web\"\nrate_limit = {limit}"),
        )
    };
    let c = parse(&with("{ requests_per_second = 50 }"), "t.toml").unwrap();
    assert_eq!(
        c.routes[1].rate_limit,
        Some(RouteRateLimit {
            requests_per_second: 50,
            burst: 50
        })
    );
    assert_eq!(c.routes[0].rate_limit, None);
    let c = parse(&with("{ requests_per_second = 5, burst = 20 }"), "t.toml").unwrap();
    assert_eq!(c.routes[1].rate_limit.map(|l| l.burst), Some(20));
    assert!(
        error_at(
            &with("{ burst = 2 }"),
            "routes[1].rate_limit.requests_per_second"
        )
        .contains("missing")
    );
    assert!(
        error_at(
            &with("{ requests_per_second = 0 }"),
            "routes[1].rate_limit.requests_per_second"
        )
        .contains("out of range")
    );
}
