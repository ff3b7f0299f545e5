//! The Connect page at a session's `connect_url`.
//!
//! `GET /authorize?session=…[&state=…]` shows a provider login (Finch Sandbox's mock
//! credentials `good_user` / `good_pass` are prefilled); posting it to the same URL completes
//! the flow: the connection is created (or, for a reauthentication session, restored to
//! `connected`), a single-use code is issued, and the browser is sent to the session's
//! `redirect_uri` with `code` and `state`. A session without a `redirect_uri` is the embedded
//! flow: the page hands the code to its opener with the Connect SDK's `finch-auth-message-v2`
//! message instead.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::Shared;
use crate::world::Code;

#[derive(Deserialize)]
pub struct AuthorizeQuery {
    session: Option<String>,
    state: Option<String>,
}

#[derive(Deserialize)]
pub struct Login {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · Finch Connect (emulator)</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1f2937}}\
         label{{display:block;margin:.75rem 0 .25rem}}input,select{{width:100%;padding:.5rem;box-sizing:border-box}}\
         button{{margin-top:1rem;padding:.6rem 1.2rem;background:#111827;color:#fff;border:0;border-radius:.4rem}}\
         .err{{color:#b91c1c}}.muted{{color:#6b7280;font-size:.9rem}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = (status, Html(html)).into_response();
    r.headers_mut().insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    r
}

fn session_or_error(s: &Shared, q: &AuthorizeQuery) -> Result<crate::world::Session, Response> {
    let w = s.world();
    let now = w.now();
    q.session.as_ref().and_then(|id| w.sessions.get(id)).filter(|sess| sess.expires_at > now).cloned().ok_or_else(
        || {
            page(
                StatusCode::BAD_REQUEST,
                "Session not found",
                "<p class=\"err\">This Connect link is invalid or has expired.</p>",
            )
        },
    )
}

/// `GET /authorize`.
pub async fn show(State(s): State<Shared>, Query(q): Query<AuthorizeQuery>) -> Response {
    let sess = match session_or_error(&s, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    login_form(&sess, None, StatusCode::OK)
}

fn login_form(sess: &crate::world::Session, error: Option<&str>, status: StatusCode) -> Response {
    let provider = sess.provider.clone().unwrap_or_else(|| "gusto".into());
    let who = sess.customer_name.clone().unwrap_or_default();
    let purpose = if sess.reauth_connection.is_some() { "Reconnect" } else { "Connect" };
    let err = error.map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<p>{purpose} <strong>{who}</strong>'s payroll system. Requested access: {products}.</p>{err}\
         <form method=\"post\">\
         <label for=\"provider\">Provider</label><input id=\"provider\" name=\"provider\" value=\"{provider}\">\
         <label for=\"username\">Username</label><input id=\"username\" name=\"username\" value=\"good_user\" autocomplete=\"off\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" value=\"good_pass\" autocomplete=\"off\">\
         <button type=\"submit\">{purpose}</button></form>\
         <p class=\"muted\">Finch emulator · sandbox credentials good_user / good_pass</p>",
        who = esc(&who),
        products = esc(&sess.products.join(", ")),
        provider = esc(&provider),
    );
    page(status, &format!("{purpose} your payroll"), &body)
}

/// `POST /authorize`: the employer logged in.
pub async fn submit(State(s): State<Shared>, Query(q): Query<AuthorizeQuery>, Form(login): Form<Login>) -> Response {
    let sess = match session_or_error(&s, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if sess.completed && sess.reauth_connection.is_none() {
        return page(
            StatusCode::BAD_REQUEST,
            "Already connected",
            "<p class=\"err\">This Connect session has already been completed.</p>",
        );
    }
    if login.username != "good_user" || login.password != "good_pass" {
        return login_form(
            &sess,
            Some("Those credentials were not accepted by the provider."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let code = uuid::Uuid::new_v4().to_string();
    {
        let mut w = s.world();
        let connection_id = match &sess.reauth_connection {
            Some(id) => {
                if let Some(c) = w.connections.get_mut(id) {
                    c.status = "connected".into();
                }
                id.clone()
            }
            None => {
                let provider = login
                    .provider
                    .filter(|p| !p.trim().is_empty())
                    .or(sess.provider.clone())
                    .unwrap_or_else(|| "gusto".into());
                let auth = sess
                    .auth_method
                    .clone()
                    .unwrap_or_else(|| if sess.manual { "assisted".into() } else { "credential".into() });
                w.create_connection(
                    sess.customer_id.clone(),
                    sess.customer_name.clone(),
                    sess.customer_email.clone(),
                    provider,
                    sess.products.clone(),
                    auth,
                    sess.sandbox.as_deref(),
                    sess.manual,
                )
            }
        };
        if let Some(x) = w.sessions.get_mut(&sess.id) {
            x.completed = true;
        }
        let now = w.now();
        w.codes.insert(
            code.clone(),
            Code {
                connection_id,
                session_id: sess.id.clone(),
                redirect_uri: sess.redirect_uri.clone(),
                issued_at: now,
                used: false,
            },
        );
    }
    match &sess.redirect_uri {
        Some(uri) => {
            let Ok(mut url) = url::Url::parse(uri) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Bad redirect",
                    "<p class=\"err\">The session's redirect_uri is not a URL.</p>",
                );
            };
            url.query_pairs_mut().append_pair("code", &code);
            if let Some(st) = &q.state {
                url.query_pairs_mut().append_pair("state", st);
            }
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = header::HeaderValue::from_str(url.as_str()) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        None => {
            let msg =
                serde_json::json!({"name": "finch-auth-message-v2", "kind": "success", "code": code, "state": q.state});
            let body = format!(
                "<p>Connected. You can close this window.</p><pre id=\"code\" data-code=\"{c}\"></pre>\
                 <script>(function(){{var m={m};var t=window.parent!==window?window.parent:window.opener;if(t){{t.postMessage(m,'*');}}}})();</script>",
                c = esc(&code),
                m = msg.to_string().replace("</", "<\\/"),
            );
            page(StatusCode::OK, "Connected", &body)
        }
    }
}
