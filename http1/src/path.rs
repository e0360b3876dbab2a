//! Path normalization for routing and forwarding: dot segments removed (RFC 3986 §5.2.4),
//! so that a route on `/public/` cannot be reached by `/public/../admin` and then serve
//! `/admin` from an upstream that resolves the dots itself.

/// Whether `segment` is `.` or `..` (also percent-encoded, `%2e` in either case): `Some(1)`
/// or `Some(2)` dots, `None` for any other segment.
fn dots(segment: &str) -> Option<u8> {
    let mut rest = segment.as_bytes();
    let mut n = 0u8;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        n += 1;
        if n > 2 {
            return None;
        }
    }
    (n > 0).then_some(n)
}

/// `path` (origin-form, without its query) with its dot segments removed, and with
/// `merge_slashes` runs of slashes made one (`/a//b` is `/a/b`, as nginx and Envoy's
/// `merge_slashes` do), or `None` when there is nothing to change (the usual case, found by
/// one scan without allocating) or it is not an absolute path (`*`). `..` at the root
/// stays at the root; a path ending in a dot segment keeps its trailing slash (`/a/b/..` is
/// `/a/`).
pub fn normalize_path(path: &str, merge_slashes: bool) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let suspicious = path.contains("/.")
        || (merge_slashes && path.contains("//"))
        || path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e');
    if !suspicious {
        return None;
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = false;
        match dots(segment) {
            Some(1) => trailing_slash = true,
            Some(_) => {
                kept.pop();
                trailing_slash = true;
            }
            // An empty segment is a doubled slash, or the trailing one.
            None if merge_slashes && segment.is_empty() => trailing_slash = true,
            None => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    (out != path).then_some(out)
}

/// `path` with its first `matched` bytes (the prefix a route matched) replaced by `with`
/// (Envoy's `prefix_rewrite`). A slash that would be doubled where they meet is written
/// once: `/api` replaced by `/` makes `/api/users` `/users`, not `//users`.
pub fn replace_prefix(path: &str, matched: usize, with: &str) -> String {
    let rest = path.get(matched..).unwrap_or("");
    let rest = if with.ends_with('/') {
        rest.strip_prefix('/').unwrap_or(rest)
    } else {
        rest
    };
    let mut out = String::with_capacity(with.len() + rest.len());
    out.push_str(with);
    out.push_str(rest);
    out
}

/// Whether `with` can stand at the start of a request path: it starts with `/` and holds
/// only visible ASCII, with no `?` or `#` (no space, control character or query that
/// would change the request line).
pub fn valid_path_rewrite(with: &str) -> bool {
    with.starts_with('/')
        && with
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// Whether `target` may be sent as a request's origin-form target as it is: a path
/// starting with `/` and an optional query, visible ASCII only, without a fragment.
pub fn valid_origin_form(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// Whether `path` could reach a dot segment that [`normalize_path`] does not see: one
/// next to an escaped slash or backslash (`/a/..%2Fb`, `/a/%2e%2e%5cb`, `/a/..\b`, which
/// many servers decode before resolving dots), or carrying a path parameter (`/a/..;/b`,
/// read as `..` by servlet containers). The proxy and the upstream could route such a path
/// differently, so it is refused rather than guessed at.
pub fn ambiguous_path(path: &str) -> bool {
    let escaped_separator = |w: &[u8]| {
        w[0] == b'%'
            && ((w[1] == b'2' && (w[2] | 0x20) == b'f') || (w[1] == b'5' && (w[2] | 0x20) == b'c'))
    };
    let bytes = path.as_bytes();
    let widened = bytes.contains(&b'\\') || bytes.windows(3).any(escaped_separator);
    if widened {
        // The segments as a server that decodes separators sees them.
        let plain = path
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%5C", "/")
            .replace("%5c", "/")
            .replace('\\', "/");
        if plain.split('/').any(|s| dots(param_free(s)).is_some()) {
            return true;
        }
    }
    path.split('/')
        .any(|s| s.contains(';') && dots(param_free(s)).is_some())
}

/// A segment without its path parameters (`..;jsessionid=1` is `..`).
fn param_free(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}
