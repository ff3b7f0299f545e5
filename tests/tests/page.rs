//! The connections page as the local stack serves it, and the emulator's side of the Connect
//! SDK's iframe protocol and its dashboard — what the browser tests (`web/tests/`, Chromium)
//! stand on, checked here without a browser.

use perch_tests::TestStack;
use serde_json::json;

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn the_page_is_served_with_a_policy_that_frames_only_finch() {
    let stack = TestStack::start_quiet().await;
    let r = stack.get("/", None).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let csp = header(&r, "content-security-policy").to_owned();
    let finch_origin = url::Url::parse(&stack.finch.base_url).expect("url").origin().ascii_serialization();
    assert!(csp.contains(&format!("frame-src {finch_origin};")), "{csp}");
    assert!(csp.contains("script-src 'self';") && csp.contains("default-src 'none'"), "{csp}");
    let html = r.text().await.expect("html");
    assert!(html.contains("src=\"vendor/finch-connect.js\"") && html.contains("src=\"app.js\""));

    let js = stack.get("/app.js", None).await;
    assert_eq!(js.status(), 200);
    assert!(header(&js, "content-type").starts_with("text/javascript"));
    assert!(js.text().await.expect("js").contains("/connect/callback"));
}

#[tokio::test]
async fn the_served_connect_sdk_speaks_the_protocol_the_emulator_implements() {
    let stack = TestStack::start_quiet().await;
    let r = stack.get("/vendor/finch-connect.js", None).await;
    // scripts/test.sh installs web/node_modules (npm ci) before the Rust tests.
    assert_eq!(r.status(), 200, "web/node_modules missing: run npm ci in web/");
    let sdk = r.text().await.expect("sdk");
    for needle in ["finch-auth-message-v2", "sdk_host_url", "global.FinchConnect", "/authorize"] {
        assert!(sdk.contains(needle), "the Connect SDK no longer contains {needle}");
    }
}

#[tokio::test]
async fn only_the_pages_own_files_are_served() {
    let stack = TestStack::start_quiet().await;
    for path in [
        "/index.html",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/web/app.js",
        "/node_modules/@tryfinch/react-connect/package.json",
        "/package.json",
    ] {
        let r = stack.get(path, None).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.json::<serde_json::Value>().await.expect("json")["message"], "Not Found", "{path}");
    }
}

#[tokio::test]
async fn dev_config_points_the_page_at_the_emulators_dashboard() {
    let stack = TestStack::start_quiet().await;
    let v: serde_json::Value = stack.get("/dev/config", None).await.json().await.expect("json");
    let dashboard = v["finch_dashboard_url"].as_str().expect("url").to_owned();
    assert_eq!(dashboard, format!("{}/_emulator/", stack.finch.base_url.trim_end_matches('/')));
    let page = stack.get(&dashboard, None).await;
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn the_embedded_connect_page_talks_only_to_the_sdks_host() {
    let stack = TestStack::start_quiet().await;
    let s = stack.new_session("page-embedded", json!({"products": ["company"], "flow": "embedded"})).await;
    let host = "http://app.example:8080";
    let url = format!("{}&sdk_host_url={}&app_type=spa", s["connect_url"].as_str().expect("url"), host);
    let form = stack.get(&url, None).await.text().await.expect("html");
    // The employer can close Connect: the SDK hears `closed`, sent to the host's origin only.
    assert!(form.contains("id=\"cancel\""), "{form}");
    assert!(form.contains(r#""kind":"closed""#) && form.contains(r#""http://app.example:8080""#), "{form}");

    let done = stack.login_at_finch(&url).await.text().await.expect("html");
    assert!(done.contains(r#""kind":"success""#), "{done}");
    assert!(done.contains(r#"postMessage({"#) && done.contains(r#"},"http://app.example:8080")"#), "{done}");
    assert!(!done.contains("'*'"), "a code must not be posted to any origin: {done}");
}

#[tokio::test]
async fn an_unknown_session_in_the_sdks_iframe_reports_an_error_that_closes_it() {
    let stack = TestStack::start_quiet().await;
    let url = format!("{}/authorize?session=nope&sdk_host_url=http://app.example", stack.finch.base_url);
    let r = stack.get(&url, None).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.expect("html");
    assert!(html.contains(r#""kind":"error""#) && html.contains(r#""shouldClose":true"#), "{html}");
    assert!(html.contains(r#""type":"validation_error""#), "{html}");

    // Opened by hand (no SDK), the page only says so.
    let plain = stack.get(&format!("{}/authorize?session=nope", stack.finch.base_url), None).await;
    assert!(!plain.text().await.expect("html").contains("postMessage"));
}

#[tokio::test]
async fn the_redirect_connect_page_has_no_cancel_message() {
    let stack = TestStack::start_quiet().await;
    let s = stack.new_session("page-redirect", json!({"products": ["company"]})).await;
    let form = stack.get(s["connect_url"].as_str().expect("url"), None).await.text().await.expect("html");
    assert!(!form.contains("id=\"cancel\"") && !form.contains("postMessage"), "{form}");
}

#[tokio::test]
async fn the_emulators_dashboard_flips_a_connection_and_perch_hears_of_it() {
    let stack = TestStack::start_quiet().await;
    stack.enable_webhooks().await;
    let id = stack.connect("page-dashboard").await;
    let dashboard = format!("{}/_emulator/", stack.finch.base_url);
    let html = stack.get(&dashboard, None).await.text().await.expect("html");
    assert!(html.contains(&format!("data-connection-id=\"{id}\"")), "{html}");

    let r = press_needs_reauth(&stack, &id).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/_emulator/");
    // The webhook was delivered before the dashboard answered.
    assert_eq!(stack.stored_status(&id).await, "reauth");
    let after = stack.get(&dashboard, None).await.text().await.expect("html");
    assert!(after.contains("<td class=\"status\">reauth</td>"), "{after}");

    assert_eq!(press_needs_reauth(&stack, "nope").await.status(), 404);
}

/// What the dashboard's "Needs reauth" button sends.
async fn press_needs_reauth(stack: &TestStack, id: &str) -> reqwest::Response {
    stack
        .http
        .post(format!("{}/_emulator/dashboard/connections/{id}/status", stack.finch.base_url))
        .form(&[("status", "reauth")])
        .send()
        .await
        .expect("POST")
}
