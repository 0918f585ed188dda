//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations (each route module registers its handlers with
//! `OpenApiRouter::routes`), and the `/docs` page rendered from it.

use std::sync::OnceLock;

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};

/// The name of the bearer security scheme in the document.
pub const SECURITY_SCHEME: &str = "api_key";

/// The document's header: info, tags, the bearer scheme (required by default;
/// public routes opt out with `security(())`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate API",
        description = "Usage metering, plan enforcement and billing.\n\n\
            Authenticate with `Authorization: Bearer tg_…`. Keys have a scope: `admin` \
            (everything), `server` (the host application's backend: enforcement, \
            ingestion, customers) or `customer` (read-only, one customer).\n\n\
            Conventions: JSON with snake_case fields; timestamps RFC 3339 UTC; money as \
            `{\"amount\": \"339.50\", \"currency\": \"USD\"}`; quantities as decimal strings \
            (requests accept numbers or strings); lists take `limit` and `starting_after` \
            and return `{\"data\": [...], \"has_more\": bool}`; errors are RFC 9457 \
            `application/problem+json` with `errors: [{field, message}]` for invalid input.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health, readiness, metrics and this document"),
        (name = "keys", description = "API keys (admin)"),
        (name = "customers", description = "Customers, subscriptions, overrides, grants"),
        (name = "enforcement", description = "Check and consume, reservations, gauges, rates, leases, caps, flags, values"),
        (name = "events", description = "Usage event ingestion"),
        (name = "usage", description = "Usage and entitlements"),
        (name = "plans", description = "The catalog's plans"),
        (name = "admin", description = "Operator tools"),
        (name = "webhooks", description = "Alert delivery: webhook endpoints, secret rotation, the delivery log, retry and replay (admin)"),
        (name = "invoices", description = "Invoices, their HTML and PDF documents, payments, credit notes; the Stripe webhook"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Adds the bearer scheme and makes it the default requirement.
#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("tg_… API key".into());
        http.description = Some("An API key: `Authorization: Bearer tg_…`".into());
        components.add_security_scheme(SECURITY_SCHEME, SecurityScheme::Http(http));
        openapi.security = Some(vec![SecurityRequirement::new(
            SECURITY_SCHEME,
            Vec::<String>::new(),
        )]);
    }
}

/// An RFC 9457 problem, as every error of the API is rendered (see
/// [`crate::error::ApiError`]). Enforcement denials add the decision's fields.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// The problem type: a URI ending in `code`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// A stable machine-readable code (`validation`, `unauthenticated`, …).
    pub code: String,
    /// The invalid fields (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldErrorDoc>>,
}

/// One invalid field of a request.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = FieldError)]
pub struct FieldErrorDoc {
    pub field: String,
    pub message: String,
}

/// The errors any authenticated operation may answer, whatever its handler
/// does: documented on every operation that does not document them itself,
/// so clients (and conformance checkers) know every status they can get.
///
/// - 400: a body or query string that does not parse; 401: a missing or
///   invalid key; 403: a key whose scope does not allow the operation;
///   422: an invalid field; 429: the key's rate limit;
/// - 404 where the path names a resource;
/// - 409 on writes and on a customer's paths (the customer is deleted, or the
///   write conflicts with the current state);
/// - 413 and 415 where there is a request body.
fn document_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let components = doc.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        ("Problem", <ProblemDoc as utoipa::PartialSchema>::schema()),
        (
            "FieldError",
            <FieldErrorDoc as utoipa::PartialSchema>::schema(),
        ),
    ] {
        components.schemas.entry(name.to_string()).or_insert(schema);
    }
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_params = path.contains('{');
        let customer_path = path.starts_with("/v1/customers/{");
        let ops = [
            (false, item.get.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (true, item.patch.as_mut()),
            (true, item.delete.as_mut()),
        ];
        for (write, op) in ops {
            let Some(op) = op else { continue };
            let public = op.security.as_ref().is_some_and(|reqs| {
                reqs.iter().all(|r| {
                    serde_json::to_value(r)
                        .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
                })
            });
            if public {
                continue;
            }
            let mut add: Vec<(&str, &str)> = vec![
                (
                    "400",
                    "Malformed request (a body or query string that does not parse)",
                ),
                ("401", "Missing or invalid API key"),
                ("403", "This key's scope does not allow the operation"),
                ("422", "Invalid request (the field is named)"),
                (
                    "429",
                    "Too many requests for this API key (see `Retry-After`)",
                ),
            ];
            if has_params {
                add.push(("404", "Not found"));
            }
            if write || customer_path {
                add.push((
                    "409",
                    "Conflicts with the current state (e.g. the customer is deleted)",
                ));
            }
            if op.request_body.is_some() {
                add.push(("413", "Request body too large"));
                add.push(("415", "The body is not `application/json`"));
            }
            for (status, description) in add {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem(description));
            }
        }
    }
}

/// The full document (computed once from the routes).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = crate::routes::router().into_openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        document_common_errors(&mut doc);
        doc
    })
}

/// The document as JSON text (computed once).
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_string())
    })
}

// ---- the reference page ------------------------------------------------------------

/// The `/docs` page (rendered once): every operation grouped by tag, with its
/// method, path, summary, access, parameters, request body and responses, then
/// every schema. Plain HTML and CSS: no script, nothing loaded from elsewhere.
pub fn docs_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| {
        let value = serde_json::to_value(document()).unwrap_or_default();
        render_docs(&value)
    })
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

const STYLE: &str = "
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
header{background:#1d2330;color:#fff;padding:24px 40px}header h1{margin:0 0 4px;font-size:26px}
header p{margin:4px 0;color:#c9d1e0;max-width:900px}
nav{position:fixed;top:0;bottom:0;left:0;width:250px;overflow-y:auto;overflow-x:hidden;background:#fff;border-right:1px solid #e2e5ea;padding:16px}
nav a{display:block;color:#1d2330;text-decoration:none;padding:2px 0;font-size:13px;overflow-wrap:anywhere}
nav a:hover{text-decoration:underline}
nav h3{font-size:12px;text-transform:uppercase;color:#68738a;margin:14px 0 4px}
main{margin-left:283px;padding:0 40px 60px}.wrap{margin-left:283px}
section.op{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:14px 20px;margin:14px 0}
h2.tag{margin-top:36px;border-bottom:2px solid #1d2330;padding-bottom:4px}
.m{display:inline-block;min-width:64px;text-align:center;font:bold 12px monospace;color:#fff;border-radius:4px;padding:3px 6px;margin-right:8px}
.get{background:#2f7d4f}.post{background:#2b5fad}.put{background:#9a6a12}.patch{background:#7a4fa8}.delete{background:#b03a3a}.head,.options{background:#68738a}
code,.path{font-family:ui-monospace,Menlo,Consolas,monospace}.path{font-size:15px;font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:14px}
th,td{border-bottom:1px solid #eceef2;text-align:left;padding:5px 8px;vertical-align:top}th{color:#68738a;font-weight:600;font-size:12px;text-transform:uppercase}
.muted{color:#68738a}.req{color:#b03a3a;font-size:12px}.scope{font-size:12px;background:#eef1f6;border-radius:4px;padding:1px 6px}
h4{margin:12px 0 4px;font-size:13px;text-transform:uppercase;color:#68738a}
pre{background:#f2f4f7;padding:8px;border-radius:6px;overflow:auto;font-size:13px}
";

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Minimal inline markdown: `code` spans, paragraphs.
fn prose(s: &str) -> String {
    let mut out = String::new();
    for para in s.split("\n\n") {
        let mut html = String::new();
        for (i, part) in esc(para).split('`').enumerate() {
            if i % 2 == 1 {
                html.push_str("<code>");
                html.push_str(part);
                html.push_str("</code>");
            } else {
                html.push_str(part);
            }
        }
        out.push_str("<p>");
        out.push_str(&html);
        out.push_str("</p>");
    }
    out
}

fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A schema as a short type expression, with links to named schemas.
fn type_of(schema: &serde_json::Value) -> String {
    use serde_json::Value;
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!(
            "<a href=\"#schema-{}\"><code>{}</code></a>",
            anchor(name),
            esc(name)
        );
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = list
                .iter()
                .filter(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                .map(type_of)
                .collect();
            let nullable = list
                .iter()
                .any(|s| s.get("type").and_then(Value::as_str) == Some("null"));
            let joined = parts.join(if key == "allOf" { " &amp; " } else { " | " });
            return if nullable {
                format!("{joined} | null")
            } else {
                joined
            };
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let vs: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect();
        return vs.join(" | ");
    }
    let types: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let mut shown = Vec::new();
    for t in &types {
        let s = match t.as_str() {
            "array" => format!(
                "array of {}",
                schema.get("items").map(type_of).unwrap_or_default()
            ),
            "object" => match schema.get("additionalProperties") {
                Some(ap) if ap.is_object() => format!("map of {}", type_of(ap)),
                _ => "object".to_string(),
            },
            other => {
                let fmt = schema
                    .get("format")
                    .and_then(Value::as_str)
                    .map(|f| format!(" <span class=\"muted\">({})</span>", esc(f)))
                    .unwrap_or_default();
                format!("{}{fmt}", esc(other))
            }
        };
        shown.push(s);
    }
    if shown.is_empty() {
        "any".to_string()
    } else {
        shown.join(" | ")
    }
}

/// The properties of an object schema as a table.
fn properties_table(schema: &serde_json::Value) -> String {
    use serde_json::Value;
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from("<table><tr><th>field</th><th>type</th><th>description</th></tr>");
    for (name, prop) in props {
        let req = if required.contains(&name.as_str()) {
            " <span class=\"req\">required</span>"
        } else {
            ""
        };
        let desc = prop
            .get("description")
            .and_then(Value::as_str)
            .map(esc)
            .unwrap_or_default();
        out.push_str(&format!(
            "<tr><td><code>{}</code>{req}</td><td>{}</td><td>{desc}</td></tr>",
            esc(name),
            type_of(prop)
        ));
    }
    out.push_str("</table>");
    out
}

/// A tag, its description, and its operations (method, path, operation).
type TagGroup = (String, String, Vec<(String, String, serde_json::Value)>);

fn render_docs(doc: &serde_json::Value) -> String {
    use serde_json::Value;
    let info = &doc["info"];
    let title = info["title"].as_str().unwrap_or("API");
    let version = info["version"].as_str().unwrap_or("");
    let description = info["description"].as_str().unwrap_or("");
    let tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or("").to_string(),
                        t["description"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Operations grouped by their first tag, in the tag order of the document.
    let mut groups: Vec<TagGroup> = tags
        .iter()
        .map(|(n, d)| (n.clone(), d.clone(), Vec::new()))
        .collect();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                let Some(op) = item.get(*method) else {
                    continue;
                };
                let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
                let pos = match groups.iter().position(|g| g.0 == tag) {
                    Some(p) => p,
                    None => {
                        groups.push((tag.clone(), String::new(), Vec::new()));
                        groups.len() - 1
                    }
                };
                let mut op = op.clone();
                if let (Some(shared), Some(obj)) = (item.get("parameters"), op.as_object_mut()) {
                    let mut params = shared.as_array().cloned().unwrap_or_default();
                    if let Some(own) = obj.get("parameters").and_then(Value::as_array) {
                        params.extend(own.iter().cloned());
                    }
                    obj.insert("parameters".into(), Value::Array(params));
                }
                groups[pos].2.push((method.to_string(), path.clone(), op));
            }
        }
    }
    groups.retain(|g| !g.2.is_empty());
    let count: usize = groups.iter().map(|g| g.2.len()).sum();

    let mut nav = String::new();
    let mut body = String::new();
    for (tag, tag_desc, ops) in &groups {
        nav.push_str(&format!("<h3>{}</h3>", esc(tag)));
        body.push_str(&format!(
            "<h2 class=\"tag\" id=\"tag-{}\">{}</h2><p class=\"muted\">{}</p>",
            anchor(tag),
            esc(tag),
            esc(tag_desc)
        ));
        for (method, path, op) in ops {
            let id = format!("op-{method}-{}", anchor(path));
            nav.push_str(&format!(
                "<a href=\"#{id}\"><span class=\"muted\">{}</span> {}</a>",
                method.to_uppercase(),
                esc(path)
            ));
            body.push_str(&render_operation(&id, method, path, op));
        }
    }
    let mut schemas = String::new();
    if let Some(map) = doc["components"]["schemas"].as_object() {
        nav.push_str("<h3>schemas</h3>");
        schemas.push_str("<h2 class=\"tag\" id=\"schemas\">schemas</h2>");
        for (name, schema) in map {
            nav.push_str(&format!(
                "<a href=\"#schema-{}\">{}</a>",
                anchor(name),
                esc(name)
            ));
            let desc = schema["description"]
                .as_str()
                .map(prose)
                .unwrap_or_default();
            let table = properties_table(schema);
            let shape = if table.is_empty() {
                format!("<p>{}</p>", type_of(schema))
            } else {
                table
            };
            schemas.push_str(&format!(
                "<section class=\"op\" id=\"schema-{}\"><span class=\"path\">{}</span>{desc}{shape}</section>",
                anchor(name),
                esc(name)
            ));
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} reference</title><style>{STYLE}</style></head><body>\
         <nav><strong>{t}</strong> <span class=\"muted\">{v}</span>\
         <a href=\"/openapi.json\">openapi.json</a>{nav}</nav>\
         <div class=\"wrap\"><header><h1>{t}</h1><p>version {v} · {count} operations · \
         <a style=\"color:#fff\" href=\"/openapi.json\">OpenAPI 3.1 document</a></p>{d}</header></div>\
         <main>{body}{schemas}</main></body></html>",
        t = esc(title),
        v = esc(version),
        d = prose(description),
    )
}

fn render_operation(id: &str, method: &str, path: &str, op: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut out = format!(
        "<section class=\"op\" id=\"{id}\"><span class=\"m {method}\">{}</span>\
         <span class=\"path\">{}</span>",
        method.to_uppercase(),
        esc(path)
    );
    let public = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .all(|r| r.as_object().is_some_and(|o| o.is_empty()))
        });
    out.push_str(if public {
        " <span class=\"scope\">no key</span>"
    } else {
        " <span class=\"scope\">bearer key</span>"
    });
    if let Some(summary) = op["summary"].as_str() {
        out.push_str(&format!("<p><strong>{}</strong></p>", esc(summary)));
    }
    if let Some(desc) = op["description"].as_str() {
        out.push_str(&prose(desc));
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(
            "<h4>parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>description</th></tr>",
        );
        for p in params {
            let req = if p["required"].as_bool() == Some(true) {
                " <span class=\"req\">required</span>"
            } else {
                ""
            };
            out.push_str(&format!(
                "<tr><td><code>{}</code>{req}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p["name"].as_str().unwrap_or("")),
                esc(p["in"].as_str().unwrap_or("")),
                p.get("schema").map(type_of).unwrap_or_default(),
                esc(p["description"].as_str().unwrap_or(""))
            ));
        }
        out.push_str("</table>");
    }
    if let Some(content) = op["requestBody"]["content"].as_object() {
        out.push_str("<h4>request body</h4><table><tr><th>content type</th><th>schema</th></tr>");
        for (ct, media) in content {
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(ct),
                media.get("schema").map(type_of).unwrap_or_default()
            ));
        }
        out.push_str("</table>");
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str(
            "<h4>responses</h4><table><tr><th>status</th><th>description</th><th>body</th></tr>",
        );
        for (status, r) in responses {
            let body = r["content"]
                .as_object()
                .map(|c| {
                    c.iter()
                        .map(|(ct, m)| {
                            format!(
                                "<code>{}</code> {}",
                                esc(ct),
                                m.get("schema").map(type_of).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{body}</td></tr>",
                esc(status),
                esc(r["description"].as_str().unwrap_or(""))
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
    out
}
