//! The route patterns, as the metrics and logs name them (`/notifications/{id}`, never a raw
//! id): a short, fixed set of label values. The table in `mod.rs` routes; this one names. Keep
//! them in step: every route of the table has a pattern here (the tests below check the
//! patterns against the table's 405 list), and a path that matches none is [`OTHER`].

/// Every path the route table answers, after `--base-path`; `{…}` stands for one segment.
/// Literal patterns come before the ones with a placeholder at the same place.
pub const PATTERNS: &[&str] = &[
    "/",
    "/events",
    "/auth",
    "/session",
    "/notifications",
    "/notifications/counts",
    "/notifications/{id}",
    "/notifications/{id}/actions/{action}",
    "/publish",
    "/groups/{group}/members",
    "/groups/{group}/members/{user}",
    "/presence/{user}",
    "/preferences",
    "/preferences/categories/{category}",
    "/push/key",
    "/push/subscriptions",
    "/healthz",
    "/readyz",
    "/metrics",
    "/herald.js",
    "/herald-worker.js",
    "/herald-sw.js",
    "/openapi.yaml",
    "/dev/login",
    "/dev/publish",
];
/// Everything under `/api/` (the proxy): one label, whatever the rest of the path.
pub const API: &str = "/api/{path}";
/// The admin page and its endpoints (`--admin`; `admin.rs` routes them), `/admin` included.
pub const ADMIN: &str = "/admin/{path}";
/// A path outside the table or outside `--base-path`.
pub const OTHER: &str = "other";

/// The pattern `path` (as requested, `--base-path` included) matches, or [`OTHER`].
pub fn label(base_path: &str, path: &str) -> &'static str {
    let Some(rest) = super::strip_base(base_path, path) else {
        return OTHER;
    };
    if rest.starts_with("/api/") {
        return API;
    }
    if rest == "/admin" || rest.starts_with("/admin/") {
        return ADMIN;
    }
    // One leading slash, as the route table strips it: `//events` is not `/events`.
    let segments: Vec<_> = rest
        .strip_prefix('/')
        .unwrap_or(rest)
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy())
        .collect();
    PATTERNS
        .iter()
        .find(|pattern| matches(pattern, &segments))
        .copied()
        .unwrap_or(OTHER)
}

fn matches(pattern: &str, segments: &[std::borrow::Cow<'_, str>]) -> bool {
    let mut want = pattern.trim_start_matches('/').split('/');
    let mut got = segments.iter();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') || w == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw ids never become labels: each path gets its pattern.
    #[test]
    fn paths_get_their_pattern() {
        assert_eq!(label("/", "/notifications/01HX"), "/notifications/{id}");
        assert_eq!(label("/", "/notifications/counts"), "/notifications/counts");
        assert_eq!(
            label("/", "/notifications/01HX/actions/approve"),
            "/notifications/{id}/actions/{action}"
        );
        assert_eq!(
            label("/", "/groups/g%20x/members/bob"),
            "/groups/{group}/members/{user}"
        );
        assert_eq!(label("/", "/api/builds/42"), API);
        assert_eq!(label("/", "/admin"), ADMIN);
        assert_eq!(label("/", "/admin/nodes"), ADMIN);
        assert_eq!(label("/", "/"), "/");
        assert_eq!(label("/", "/events"), "/events");
    }

    /// Unknown paths, and paths outside the base path, share one label.
    #[test]
    fn unknown_paths_are_other() {
        assert_eq!(label("/", "/nothing/here"), OTHER);
        assert_eq!(label("/", "/notifications/a/b"), OTHER);
        assert_eq!(label("/", "//events"), OTHER);
        assert_eq!(label("/herald/", "/events"), OTHER);
        assert_eq!(label("/herald/", "/herald/events"), "/events");
        assert_eq!(label("/herald/", "/herald/api/x"), API);
    }

    /// Every pattern is a path the route table answers (it has an `Allow` list), so the
    /// label set and the routes stay in step.
    #[test]
    fn every_pattern_is_routed() {
        for pattern in PATTERNS.iter().filter(|p| **p != "/") {
            let segs: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
            assert!(
                super::super::allowed_methods(&segs, true).is_some(),
                "{pattern} is not in the route table"
            );
        }
        assert!(super::super::allowed_methods(&[""], true).is_some());
    }
}
