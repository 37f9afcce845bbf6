//! posture's dashboard page: the four tiles of the product we model (the secure score with its
//! categories, the score over time, top recommendations, improvement opportunities) and a
//! recommendation's misconfigured devices with CSV export, for the tenant and group chosen.
//!
//! ```text
//! browser --GET /--> this crate (index.html, /assets/app.js, /assets/app.css, embedded)
//!    \--fetch /api/v1/... with the user's token--> posture-query's API (same port)
//! ```
//!
//! The page is built from `web/` (plain JavaScript modules, uPlot from npm, bundled by esbuild:
//! `scripts/web build`) into `crates/posture-web/assets/`, which is committed and embedded here
//! with `include_str!`: neither `cargo build` nor the release needs Node, and `scripts/web check`
//! (run by `scripts/test`) fails when the committed assets are not what `web/` builds from its
//! lock file. The page holds no secret: it asks for an API token and keeps it in the browser
//! tab's `sessionStorage`; every figure comes from the API, which checks the token.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's HTML.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The page's script: `web/src/*.js` and uPlot, bundled and minified.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The page's stylesheet: uPlot's and `web/src/app.css`.
pub const APP_CSS: &str = include_str!("../assets/app.css");

/// What the page may load: its own origin only (no inline script, no third party).
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The routes of the page: `/` and `/index.html` (the HTML), `/assets/app.js`, `/assets/app.css`.
/// Merge into the router that serves `/api/v1`: the page calls the API on its own origin.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML, false) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML, false) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS, true) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS, true) }),
        )
}

/// One embedded file with its type and the page's security headers. The HTML is never stored
/// (a new release's page is seen at once); the assets may be stored but are asked for again each
/// time (`no-cache`; they are small, and a release changes them).
fn asset(content_type: &'static str, body: &'static str, cache: bool) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if cache { "no-cache" } else { "no-store" }),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_with_their_types() {
        for (path, ty, needle) in [
            ("/", "text/html", "/assets/app.js"),
            ("/assets/app.js", "text/javascript", "/api/v1/whoami"),
            ("/assets/app.css", "text/css", ".uplot"),
        ] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty), "{path}");
            assert!(h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'"));
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            let body = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
            assert!(String::from_utf8_lossy(&body).contains(needle), "{path} holds {needle}");
        }
        assert_eq!(get("/assets/other.js").await.status(), StatusCode::NOT_FOUND);
    }

    /// The page loads no script but its own: no inline script, no other origin.
    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(INDEX_HTML.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
    }
}
