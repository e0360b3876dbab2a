use crate::{normalize_path, replace_prefix, valid_path_rewrite};

#[test]
fn dot_segments_are_removed_as_rfc_3986_says() {
    let cases = [
        ("/public/../admin", Some("/admin")),
        ("/a/./b", Some("/a/b")),
        ("/a/b/..", Some("/a/")),
        ("/a/b/.", Some("/a/b/")),
        ("/..", Some("/")),
        ("/../../etc/passwd", Some("/etc/passwd")),
        ("/a//../b", Some("/a/b")),
        // Percent-encoded dots are dots.
        ("/public/%2e%2e/admin", Some("/admin")),
        ("/public/%2E./admin", Some("/admin")),
        ("/a/%2e/b", Some("/a/b")),
    ];
    for (path, want) in cases {
        assert_eq!(normalize_path(path, false).as_deref(), want, "{path}");
    }
}

#[test]
fn paths_without_dot_segments_are_left_alone() {
    for path in [
        "/",
        "/a/b",
        "/a/",
        "/a//b",
        "/.well-known/x",
        "/a/...",
        "/a/.b/c",
        "/a%2eb",
        "/%2e%2e%2e",
        "*",
        "",
    ] {
        assert_eq!(normalize_path(path, false), None, "{path}");
    }
}

#[test]
fn merged_slashes_make_one_and_keep_a_trailing_one() {
    let cases = [
        ("/a//b", Some("/a/b")),
        ("//admin/x", Some("/admin/x")),
        ("/a///b//", Some("/a/b/")),
        ("//", Some("/")),
        ("/a//../b", Some("/b")),
        ("/a/.//b", Some("/a/b")),
        ("/a/b/", None),
        ("/a/b", None),
        ("/", None),
    ];
    for (path, want) in cases {
        assert_eq!(normalize_path(path, true).as_deref(), want, "{path}");
    }
    // Without the option a doubled slash is a segment of its own.
    assert_eq!(normalize_path("//admin/x", false), None);
}

#[test]
fn dots_behind_escaped_separators_or_parameters_are_ambiguous() {
    use crate::ambiguous_path;
    for path in [
        "/who/..%2Fheaders",
        "/who/%2e%2e%2fheaders",
        "/who/..%5Cheaders",
        "/who/..\\headers",
        "/who/..;/headers",
        "/who/..;jsessionid=1/headers",
        "/a/.;/b",
    ] {
        assert!(ambiguous_path(path), "{path}");
    }
    for path in [
        "/a/b",
        "/group%2Fproject/issues",
        "/a;v=1/b",
        "/a/../b",
        "/files/a%5Cb.txt",
        "/.well-known%2Fx",
    ] {
        assert!(!ambiguous_path(path), "{path}");
    }
}

#[test]
fn a_matched_prefix_is_replaced_without_doubling_the_slash() {
    let cases = [
        ("/api/users", "/api/", "/v2/", "/v2/users"),
        ("/api/users", "/api", "/", "/users"),
        ("/api/users", "/api", "/v2", "/v2/users"),
        ("/api", "/api", "/", "/"),
        ("/apix", "/api", "/", "/x"),
        ("/users", "/", "/v2/", "/v2/users"),
        ("/old/page", "/old/page", "/new", "/new"),
    ];
    for (path, prefix, with, want) in cases {
        assert_eq!(
            replace_prefix(path, prefix.len(), with),
            want,
            "{path} {prefix} {with}"
        );
    }
    for good in ["/", "/v2/", "/a-b_c~d/%20"] {
        assert!(valid_path_rewrite(good), "{good}");
    }
    for bad in ["", "v2/", "/a b", "/a?b", "/a#b", "/a\r\nx: y", "/é"] {
        assert!(!valid_path_rewrite(bad), "{bad:?}");
    }
}
