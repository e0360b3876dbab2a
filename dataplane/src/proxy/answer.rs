//! A route's own answers (Envoy's `direct_response` and `redirect`): the fields they are
//! sent with and where a redirect points.

use crate::{
    http1,
    snapshot::{HeaderEdits, RedirectPath, RedirectRt},
};

/// Where `to` sends a request for `path` (as routed; the route matched its first
/// `matched` bytes) with `query`, made of `authority` (`host[:port]`, the one the client
/// reached) on the listener's plain `http`.
pub(super) fn location(
    to: &RedirectRt,
    authority: &str,
    path: &str,
    matched: usize,
    query: Option<&str>,
) -> String {
    let (host, port) = http1::split_port(authority);
    let host = to.host.as_deref().unwrap_or(host);
    let scheme = if to.https { "https" } else { "http" };
    let default_port = if to.https { "443" } else { "80" };
    let given = to.port.map(|p| p.to_string());
    let port = match given.as_deref() {
        Some(p) => Some(p),
        // A changed scheme drops the old one's default port (`:80` does not go to https);
        // another port is kept as the client wrote it.
        None if to.https && port == Some("80") => None,
        None => port,
    }
    .filter(|&p| p != default_port);
    let path = match &to.path {
        None => path.into(),
        Some(RedirectPath::Whole(p)) => std::borrow::Cow::Borrowed(&**p),
        Some(RedirectPath::Prefix(p)) => http1::replace_prefix(path, matched, p).into(),
    };
    let query = query.filter(|_| !to.strip_query);
    let mut url = format!("{scheme}://{host}");
    if let Some(p) = port {
        url.push(':');
        url.push_str(p);
    }
    url.push_str(&path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The fields of a route's own answer: `ours` (its content type or location), unless the
/// route's response `edits` replace or remove it, and then the fields they set.
pub(super) fn fields<'a>(
    ours: Option<(&'a str, &'a [u8])>,
    edits: Option<&'a HeaderEdits>,
) -> Vec<(&'a str, &'a [u8])> {
    let Some(e) = edits else {
        return ours.into_iter().collect();
    };
    let edited = |name: &str| {
        e.remove.iter().any(|r| **r == *name) || e.set.iter().any(|(s, _)| **s == *name)
    };
    let mut all: Vec<_> = ours.filter(|(n, _)| !edited(n)).into_iter().collect();
    all.extend(e.set.iter().map(|(n, v)| (&**n, &**v)));
    all
}

#[cfg(test)]
mod tests {
    use super::{fields, location};
    use crate::snapshot::{HeaderEdits, RedirectPath, RedirectRt};

    fn to(edit: impl FnOnce(&mut RedirectRt)) -> RedirectRt {
        let mut r = RedirectRt {
            https: false,
            host: None,
            port: None,
            path: None,
            code: 301,
            strip_query: false,
        };
        edit(&mut r);
        r
    }

    #[test]
    fn a_redirect_replaces_the_parts_it_names() {
        let https = to(|r| r.https = true);
        assert_eq!(
            location(&https, "a.example", "/x", 1, Some("q=1")),
            "https://a.example/x?q=1"
        );
        // The old scheme's default port goes, another stays; a port given wins, and is
        // left out when it is the new scheme's default.
        assert_eq!(
            location(&https, "a.example:80", "/x", 1, None),
            "https://a.example/x"
        );
        assert_eq!(
            location(&https, "a.example:8080", "/x", 1, None),
            "https://a.example:8080/x"
        );
        // An empty port names none; one too large for a port is kept as written.
        assert_eq!(
            location(&https, "a.example:", "/x", 1, None),
            "https://a.example/x"
        );
        assert_eq!(
            location(&https, "a.example:99999", "/x", 1, None),
            "https://a.example:99999/x"
        );
        let port = to(|r| {
            r.https = true;
            r.port = Some(443);
        });
        assert_eq!(
            location(&port, "a.example:8080", "/x", 1, None),
            "https://a.example/x"
        );
        let port = to(|r| r.port = Some(8443));
        assert_eq!(
            location(&port, "[::1]:8080", "/x", 1, None),
            "http://[::1]:8443/x"
        );
        let host = to(|r| r.host = Some("b.example".into()));
        assert_eq!(
            location(&host, "a.example:8080", "/x", 1, Some("q")),
            "http://b.example:8080/x?q"
        );
        let whole = to(|r| {
            r.path = Some(RedirectPath::Whole("/new".into()));
            r.strip_query = true;
        });
        assert_eq!(
            location(&whole, "a.example", "/old/page", 5, Some("q=1")),
            "http://a.example/new"
        );
        let prefix = to(|r| r.path = Some(RedirectPath::Prefix("/v2/".into())));
        assert_eq!(
            location(&prefix, "a.example", "/v1/users", 4, Some("id=3")),
            "http://a.example/v2/users?id=3"
        );
    }

    #[test]
    fn route_edits_replace_and_remove_the_answers_own_fields() {
        let typed: (&str, &[u8]) = ("content-type", b"text/plain");
        let ours = Some(typed);
        assert_eq!(fields(ours, None), [typed]);
        let set = HeaderEdits {
            set: vec![
                ("content-type".into(), b"text/html".as_slice().into()),
                ("cache-control".into(), b"no-store".as_slice().into()),
            ],
            remove: vec![],
        };
        assert_eq!(
            fields(ours, Some(&set)),
            [
                ("content-type", &b"text/html"[..]),
                ("cache-control", &b"no-store"[..])
            ]
        );
        let remove = HeaderEdits {
            set: vec![],
            remove: vec!["content-type".into()],
        };
        assert!(fields(ours, Some(&remove)).is_empty());
    }
}
