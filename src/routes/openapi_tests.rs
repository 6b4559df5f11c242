//! Keeps `docs/openapi.yaml` (served at `/openapi.yaml`) and the route table of `mod.rs` in
//! step: every method + path the router answers is an operation of the document and every
//! operation is a route; `allowed_methods` (405's `Allow`) names exactly the documented
//! methods of each path; and operations document the statuses their kind always can return.
//! The router is read from its source text, so a new arm in `route` fails here until the
//! document describes it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::allowed_methods;

const DOCUMENT: &str = include_str!("../../docs/openapi.yaml");
const ROUTER: &str = include_str!("mod.rs");
/// The `/admin/` table (`--admin`), which the router's `admin` arm hands the rest of the path.
const ADMIN_ROUTER: &str = include_str!("admin.rs");
/// The methods of the `/api/` proxy: every one OpenAPI can name (a CORS preflight, which the
/// CORS layer answers, is not an operation).
const PROXY_METHODS: [&str; 8] = [
    "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A path as segments, each parameter written `{}`: `/notifications/{id}` → `notifications/{}`.
fn shape(segments: impl IntoIterator<Item = String>) -> String {
    segments.into_iter().collect::<Vec<_>>().join("/")
}

fn document() -> Value {
    serde_norway::from_str(DOCUMENT).expect("docs/openapi.yaml is valid YAML")
}

/// The path item under `path`, following a `$ref` into `components/pathItems`.
fn path_item<'a>(doc: &'a Value, item: &'a Value) -> &'a Value {
    match item.get("$ref").and_then(Value::as_str) {
        Some(pointer) => doc
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("unresolved {pointer}")),
        None => item,
    }
}

/// Every operation of the document: (method, path shape) → the operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = BTreeMap::new();
    for (path, item) in paths {
        let item = path_item(doc, item);
        let segments = path.trim_start_matches('/').split('/').map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}".to_owned()
            } else {
                s.to_owned()
            }
        });
        let shape = shape(segments);
        for method in OPERATION_KEYS {
            if let Some(op) = item.get(method) {
                out.insert((method.to_ascii_uppercase(), shape.clone()), op.clone());
            }
        }
    }
    out
}

/// Every (method, path shape) of the `route` function's match arms, read from its source:
/// an arm `(["notifications", id], &Method::PATCH) =>` is `PATCH notifications/{}`. The
/// `/api/` prefix (forwarded before the table) is `api/{}` with [`PROXY_METHODS`].
fn routes() -> BTreeSet<(String, String)> {
    let start = ROUTER.find("async fn route(").expect("fn route in mod.rs");
    let end = ROUTER
        .find("fn allowed_methods(")
        .expect("fn allowed_methods in mod.rs");
    let body = &ROUTER[start..end];
    let mut out = BTreeSet::new();
    assert!(
        body.contains(r#"path.strip_prefix("/api/")"#),
        "the /api/ proxy moved"
    );
    for method in PROXY_METHODS {
        out.insert((method.to_owned(), "api/{}".to_owned()));
    }
    for line in body.lines().map(str::trim) {
        if line.starts_with(r#"(["admin", rest @ ..], _)"#) {
            out.extend(admin_routes());
            continue;
        }
        let Some(arm) = line.strip_prefix("([") else {
            continue;
        };
        let (segments, rest) = arm
            .split_once("], ")
            .expect("an arm is ([segments], methods)");
        let segments = segments.split(',').map(str::trim).map(|s| {
            match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(literal) => literal.to_owned(),
                None => "{}".to_owned(),
            }
        });
        let shape = shape(segments);
        let methods = rest.split(')').next().expect("methods end with )");
        for method in methods.split('|') {
            let method = method.trim().trim_start_matches("&Method::");
            out.insert((method.to_owned(), shape.clone()));
        }
    }
    // A parse that finds almost nothing means the table changed shape: say so.
    assert!(out.len() > 30, "read only {} routes from mod.rs", out.len());
    out
}

/// The routes of `admin::route`'s table, read from its source: an arm `["nodes"] if
/// req.method() == Method::GET =>` is `GET admin/nodes`, `[""] if get =>` is `GET` and `HEAD`
/// of `admin/`, and `[] if get` the bare `admin`.
fn admin_routes() -> BTreeSet<(String, String)> {
    let start = ADMIN_ROUTER
        .find("pub async fn route(")
        .expect("fn route in admin.rs");
    let end = ADMIN_ROUTER[start..].find("\n}").expect("end of fn route") + start;
    let mut out = BTreeSet::new();
    for line in ADMIN_ROUTER[start..end].lines().map(str::trim) {
        let Some((segments, condition)) = line
            .strip_prefix('[')
            .and_then(|arm| arm.split_once("] if "))
        else {
            continue;
        };
        let shape = match segments {
            "" => "admin".to_owned(),
            literal => format!("admin/{}", literal.trim_matches('"')),
        };
        let methods: &[&str] = if condition.starts_with("get =>") {
            &["GET", "HEAD"]
        } else if condition.contains("Method::GET") {
            &["GET"]
        } else {
            panic!("admin.rs: an arm whose methods this test can't read: {line}")
        };
        for method in methods {
            out.insert(((*method).to_owned(), shape.clone()));
        }
    }
    assert!(
        out.len() >= 10,
        "read only {} routes from admin.rs",
        out.len()
    );
    out
}

/// Every route of the router is an operation of the document, and every operation a route.
#[test]
fn document_and_router_name_the_same_endpoints() {
    let documented: BTreeSet<_> = operations(&document()).into_keys().collect();
    let routed = routes();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.yaml: {undocumented:?}\n\
         operations of docs/openapi.yaml no route answers: {unrouted:?}"
    );
}

/// For every documented path, 405's `Allow` names exactly the methods documented for it
/// (with `--dev`, so the dev routes count; the `/api/` proxy answers every method).
#[test]
fn allow_lists_match_the_document() {
    let ops = operations(&document());
    let shapes: BTreeSet<&String> = ops.keys().map(|(_, shape)| shape).collect();
    // `/api/` forwards every method; `/admin/` has its own 405s in admin.rs.
    let own = |s: &&String| !s.starts_with("api/") && *s != "admin" && !s.starts_with("admin/");
    for shape in shapes.into_iter().filter(own) {
        let concrete: Vec<&str> = shape
            .split('/')
            .map(|s| if s == "{}" { "x" } else { s })
            .collect();
        // A concrete path can match several documented shapes (`notifications/counts` and
        // `notifications/{}`): the router answers the methods of all of them.
        let documented: BTreeSet<&str> = ops
            .keys()
            .filter(|(_, other)| {
                let other: Vec<&str> = other.split('/').collect();
                other.len() == concrete.len()
                    && other
                        .iter()
                        .zip(&concrete)
                        .all(|(o, c)| *o == "{}" || o == c)
            })
            .map(|(method, _)| method.as_str())
            .collect();
        let allowed: BTreeSet<&str> = allowed_methods(&concrete, true)
            .unwrap_or_else(|| panic!("{shape}: no Allow list"))
            .split(", ")
            .collect();
        assert_eq!(allowed, documented, "{shape}");
    }
}

/// Each operation documents what its kind can always answer: `429` (`--max-connect-rate`
/// applies to every request), `401` when it needs credentials, `400`, `408` and `413` when it
/// reads a JSON body; and every error response it documents with a body uses the shared
/// `Error` schema.
#[test]
fn operations_document_their_error_statuses() {
    let doc = document();
    for ((method, shape), op) in operations(&doc) {
        let responses = op["responses"].as_object().expect("responses");
        let has = |status: &str| responses.contains_key(status);
        let secured = op
            .get("security")
            .and_then(Value::as_array)
            .is_none_or(|s| !s.is_empty());
        assert!(has("429"), "{method} {shape}: 429");
        if secured {
            assert!(has("401"), "{method} {shape}: 401");
        }
        if op.get("requestBody").is_some() {
            for status in ["400", "408", "413"] {
                assert!(has(status), "{method} {shape}: {status}");
            }
        }
        for (status, response) in responses {
            let response = path_item(&doc, response);
            let schema = response.pointer("/content/application~1json/schema/$ref");
            if status.starts_with('4') || status.starts_with('5') {
                if let Some(schema) = schema {
                    assert_eq!(
                        schema, "#/components/schemas/Error",
                        "{method} {shape} {status}"
                    );
                }
            }
        }
    }
}
