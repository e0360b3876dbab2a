//! Route matching (sans-IO): host, path and header conditions, evaluated in the listener's
//! route order; the first route whose conditions all hold wins.

use std::borrow::Cow;

/// How a route matches the Host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// The whole host name (lowercase, no port).
    Exact(String),
    /// Any subdomain: stored with its leading dot (`.example.com` for `*.example.com`).
    Suffix(String),
}

impl HostMatch {
    /// Parses a config host (`api.example.com` or `*.example.com`), normalized as request
    /// hosts are ([`normalize_host`]: lowercase, no trailing dot). A `*` not followed by a
    /// dot is part of the name (it matches nothing real), not a wildcard: `*foo.com` must
    /// not match `evilfoo.com`.
    pub fn parse(host: &str) -> Self {
        let host = normalize_host(host.as_bytes()).unwrap_or_default();
        match host.strip_prefix('*').filter(|s| s.starts_with('.')) {
            Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
            None => HostMatch::Exact(host.into_owned()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// How a route matches the path (query excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// Starts with.
    Prefix(String),
    /// Equals.
    Exact(String),
}

/// One header condition (name lowercase).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderCondition {
    /// Value equals.
    Exact(Vec<u8>),
    /// Value starts with.
    Prefix(Vec<u8>),
    /// Header present.
    Present,
}

/// A route's conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatcher {
    /// Empty: any host.
    pub hosts: Vec<HostMatch>,
    /// Path condition.
    pub path: PathMatch,
    /// All must hold.
    pub headers: Vec<(String, HeaderCondition)>,
}

/// What the router needs to know about a request.
pub trait RequestView {
    /// The Host header (or authority), as sent.
    fn host(&self) -> Option<&[u8]>;
    /// The path, without the query string.
    fn path(&self) -> &[u8];
    /// The values of a header (name lowercase), one per field, in the order sent.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;
}

/// Whether a header condition holds for the `values` of field `name`. A field sent more
/// than once is compared as one list, its values joined with `,` (RFC 9110 §5.3), so a
/// condition sees them all: a route on `x-tenant: a` does not take a request that also
/// says `x-tenant: b`. `cookie` fields are joined with `; ` instead, as one Cookie field
/// lists its pairs (RFC 6265 §5.4; HTTP/2 splits them the same way). The list is compared
/// where it lies, never copied: the work is bounded by the condition's length, however
/// many fields a request repeats.
pub fn header_holds<'a>(
    name: &str,
    mut values: impl Iterator<Item = &'a [u8]>,
    condition: &HeaderCondition,
) -> bool {
    let Some(first) = values.next() else {
        return false;
    };
    let separator = list_separator(name);
    let mut joined = first
        .iter()
        .copied()
        .chain(values.flat_map(|v| separator.iter().copied().chain(v.iter().copied())));
    let mut starts_with = |want: &[u8]| want.iter().all(|&b| joined.next() == Some(b));
    match condition {
        HeaderCondition::Present => true,
        HeaderCondition::Prefix(p) => starts_with(p),
        HeaderCondition::Exact(e) => starts_with(e) && joined.next().is_none(),
    }
}

/// What joins the values of field `name` sent more than once into one list: `; ` for
/// `cookie` (one Cookie field's pairs, RFC 6265 §5.4), `,` for every other field (RFC 9110
/// §5.3).
pub fn list_separator(name: &str) -> &'static [u8] {
    if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b","
    }
}

/// Lowercases `host`, strips a port and a trailing dot. `None` if not valid UTF-8. Borrows
/// when the host is lowercase already (no allocation per request).
pub fn normalize_host(host: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(host).ok()?.trim();
    let without_port = if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        text.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(text, |(h, _)| h)
    };
    let host = without_port.trim_end_matches('.');
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    })
}

impl RouteMatcher {
    /// Whether `req` satisfies every condition. `host` is the normalized host.
    pub fn matches(&self, req: &impl RequestView, host: Option<&str>) -> bool {
        if !self.hosts.is_empty() {
            let Some(host) = host else { return false };
            if !self.hosts.iter().any(|h| h.matches(host)) {
                return false;
            }
        }
        let path = req.path();
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            PathMatch::Exact(p) => path == p.as_bytes(),
        };
        path_ok
            && self
                .headers
                .iter()
                .all(|(name, cond)| header_holds(name, req.header_values(name), cond))
    }
}

/// Picks the first matching route among `order` (indices into `routes`).
pub fn select<'r, R>(
    routes: &'r [R],
    order: &[usize],
    matcher: impl Fn(&'r R) -> &'r RouteMatcher,
    req: &impl RequestView,
) -> Option<usize> {
    // Normalized once, and only if a route asks for the host.
    let host = std::cell::OnceCell::new();
    order.iter().copied().find(|&i| {
        routes.get(i).is_some_and(|r| {
            let m = matcher(r);
            let host = if m.hosts.is_empty() {
                None
            } else {
                host.get_or_init(|| req.host().and_then(normalize_host))
                    .as_deref()
            };
            m.matches(req, host)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        host: Option<&'static str>,
        path: &'static str,
        headers: Vec<(&'static str, &'static str)>,
    }

    impl RequestView for Req {
        fn host(&self) -> Option<&[u8]> {
            self.host.map(str::as_bytes)
        }
        fn path(&self) -> &[u8] {
            self.path.as_bytes()
        }
        fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
            self.headers
                .iter()
                .filter(move |(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn req(host: Option<&'static str>, path: &'static str) -> Req {
        Req {
            host,
            path,
            headers: vec![],
        }
    }

    fn routes() -> Vec<RouteMatcher> {
        vec![
            RouteMatcher {
                hosts: vec![HostMatch::parse("api.example.com")],
                path: PathMatch::Prefix("/v1/".into()),
                headers: vec![("x-canary".into(), HeaderCondition::Exact(b"1".to_vec()))],
            },
            RouteMatcher {
                hosts: vec![HostMatch::parse("*.example.com")],
                path: PathMatch::Exact("/health".into()),
                headers: vec![],
            },
            RouteMatcher {
                hosts: vec![],
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
            },
        ]
    }

    fn pick(r: &Req, order: &[usize]) -> Option<usize> {
        let rs = routes();
        select(&rs, order, |m| m, r)
    }

    #[test]
    fn host_normalization_strips_port_case_and_trailing_dot() {
        assert_eq!(
            normalize_host(b"API.Example.com:8080").unwrap(),
            "api.example.com"
        );
        assert_eq!(normalize_host(b"example.com.").unwrap(), "example.com");
        assert_eq!(normalize_host(b"[::1]:80").unwrap(), "::1");
        // A lowercase host is borrowed, not copied.
        assert!(matches!(
            normalize_host(b"example.com:80"),
            Some(std::borrow::Cow::Borrowed("example.com"))
        ));
    }

    #[test]
    fn first_matching_route_wins_in_listener_order() {
        let all = [0, 1, 2];
        let mut r = req(Some("api.example.com:443"), "/v1/users");
        assert_eq!(pick(&r, &all), Some(2), "header missing: falls through");
        r.headers.push(("x-canary", "1"));
        assert_eq!(pick(&r, &all), Some(0));
        assert_eq!(pick(&r, &[2, 0]), Some(2), "order is the listener's");
    }

    #[test]
    fn wildcard_hosts_match_subdomains_only() {
        let all = [1];
        assert_eq!(pick(&req(Some("a.example.com"), "/health"), &all), Some(1));
        assert_eq!(pick(&req(Some("example.com"), "/health"), &all), None);
        assert_eq!(
            pick(&req(Some("a.example.com"), "/health/x"), &all),
            None,
            "exact path"
        );
        assert_eq!(pick(&req(None, "/health"), &all), None, "host required");
    }

    #[test]
    fn config_hosts_are_normalized_like_request_hosts() {
        let host = |h: &str, config: &str| {
            let m = RouteMatcher {
                hosts: vec![HostMatch::parse(config)],
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
            };
            let r = req(Some(Box::leak(h.to_owned().into_boxed_str())), "/");
            let host = r.host().and_then(normalize_host);
            m.matches(&r, host.as_deref())
        };
        assert!(host("example.com", "Example.COM."), "a trailing dot");
        assert!(host("a.example.com", "*.example.com."));
        // A `*` without a dot after it is no wildcard.
        assert!(!host("evilfoo.com", "*foo.com"));
        assert!(!host("a.foo.com", "*foo.com"));
    }

    #[test]
    fn header_conditions_compare_values() {
        let m = RouteMatcher {
            hosts: vec![],
            path: PathMatch::Prefix("/".into()),
            headers: vec![("x-user".into(), HeaderCondition::Prefix(b"adm".to_vec()))],
        };
        let mut r = req(None, "/");
        assert!(!m.matches(&r, None));
        r.headers.push(("x-user", "admin"));
        assert!(m.matches(&r, None));
        r.headers[0].1 = "guest";
        assert!(!m.matches(&r, None));
    }

    #[test]
    fn a_repeated_header_is_matched_as_its_joined_values() {
        let exact = |v: &[u8]| RouteMatcher {
            hosts: vec![],
            path: PathMatch::Prefix("/".into()),
            headers: vec![("x-tenant".into(), HeaderCondition::Exact(v.to_vec()))],
        };
        let mut r = req(None, "/");
        r.headers.push(("x-tenant", "a"));
        assert!(exact(b"a").matches(&r, None));
        // A second value: the first alone no longer matches, the list does.
        r.headers.push(("x-other", "z"));
        r.headers.push(("x-tenant", "b"));
        assert!(!exact(b"a").matches(&r, None));
        assert!(exact(b"a,b").matches(&r, None));
        assert!(!exact(b"a,b,").matches(&r, None));
        assert!(!exact(b"a,").matches(&r, None));
        let holds =
            |values: &[&[u8]], c: HeaderCondition| header_holds("x-v", values.iter().copied(), &c);
        let prefix = |p: &[u8]| HeaderCondition::Prefix(p.to_vec());
        assert!(holds(&[b"ab", b"cd"], prefix(b"ab,c")));
        assert!(holds(&[b"ab", b"cd"], prefix(b"ab")));
        assert!(!holds(&[b"ab", b"cd"], prefix(b"abc")));
        assert!(!holds(&[b"ab"], prefix(b"ab,")));
        assert!(holds(&[b""], HeaderCondition::Present));
        assert!(!holds(&[], HeaderCondition::Present));
        assert!(!holds(&[], HeaderCondition::Exact(Vec::new())));
        assert!(holds(&[b""], HeaderCondition::Exact(Vec::new())));
        // Cookie fields join as one Cookie list does.
        let cookies: [&[u8]; 2] = [b"a=1", b"b=2"];
        let cookie = |c: HeaderCondition| header_holds("Cookie", cookies.iter().copied(), &c);
        assert!(cookie(HeaderCondition::Exact(b"a=1; b=2".to_vec())));
        assert!(!cookie(HeaderCondition::Exact(b"a=1,b=2".to_vec())));
    }
}
