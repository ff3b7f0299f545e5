//! The Connect page at a session's `connect_url`.
//!
//! `GET /authorize?session=…[&state=…]` shows a provider login (Finch Sandbox's mock
//! credentials `good_user` / `good_pass` are prefilled); posting it to the same URL completes
//! the flow: the connection is created (or, for a reauthentication session, restored to
//! `connected`), a single-use code is issued, and the browser is sent to the session's
//! `redirect_uri` with `code` and `state`.
//!
//! **Employers and entities.** A login reaches one company: the same customer name and username
//! (`good_user`, or any `good_user…` such as `good_user+west`) find the same company again, so
//! connecting it twice makes the duplicate Perch must notice. The password `multi_entity`
//! (Finch Sandbox's, for entity selection) shows the company's entities to pick one or several:
//! one connection, one token, several `entity_ids`; `good_pass` connects the first entity. A session without a `redirect_uri` is the embedded
//! flow: the page, in the Connect SDK's iframe, speaks the SDK's protocol (`@tryfinch/react-connect`
//! v5, `docs/finch-contract.md`): a `finch-auth-message-v2` message to the host page (`sdk_host_url`)
//! with `kind` `success` (and the code), `closed` (the employer pressed Cancel) or `error`
//! (the session is unknown or expired).
//!
//! `GET /_emulator/` is the emulator's own dashboard for a person: every connection, with
//! buttons that flip its status as Finch would when an employer's credentials stop working.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::Shared;
use crate::world::{Code, Session};

#[derive(Deserialize)]
pub struct AuthorizeQuery {
    session: Option<String>,
    state: Option<String>,
    /// The host page's origin, which the Connect SDK adds; messages go to it only.
    sdk_host_url: Option<String>,
}

impl AuthorizeQuery {
    /// Where the embedded flow's messages may go: the SDK's host origin (`'*'` without one, as
    /// for a page opened by hand).
    fn target_origin(&self) -> String {
        self.sdk_host_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .unwrap_or_else(|| "*".into())
    }
}

/// JavaScript posting the Connect SDK's message to the host page (in the iframe) or opener.
fn post_message_js(message: &serde_json::Value, target_origin: &str) -> String {
    // JSON is valid JavaScript; `</` is escaped so neither value can end the script element.
    format!(
        "var t=window.parent!==window?window.parent:window.opener;if(t){{t.postMessage({m},{o});}}",
        m = message.to_string().replace("</", "<\\/"),
        o = serde_json::Value::from(target_origin).to_string().replace("</", "<\\/"),
    )
}

fn post_message(message: &serde_json::Value, target_origin: &str) -> String {
    format!("<script>(function(){{{}}})();</script>", post_message_js(message, target_origin))
}

/// The login form, and the entity picker after it (a field `entity` per entity picked).
#[derive(Default)]
pub struct Login {
    /// `deny`: the employer declined to connect (the redirect flow's Decline button).
    action: Option<String>,
    provider: Option<String>,
    username: String,
    password: String,
    /// The entities picked (the picker's checkboxes); `None` before the picker was shown.
    entities: Option<Vec<String>>,
}

impl Login {
    fn parse(body: &[u8]) -> Self {
        let mut l = Login::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            match &*k {
                "action" => l.action = Some(v.into_owned()),
                "provider" => l.provider = Some(v.into_owned()),
                "username" => l.username = v.into_owned(),
                "password" => l.password = v.into_owned(),
                "picked" => {
                    l.entities.get_or_insert_with(Vec::new);
                }
                "entity" => l.entities.get_or_insert_with(Vec::new).push(v.into_owned()),
                _ => {}
            }
        }
        l
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_of_width(status, title, body, "28rem")
}

fn page_of_width(status: StatusCode, title: &str, body: &str, width: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · Finch Connect (emulator)</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:{width};margin:3rem auto;padding:0 1rem;color:#1f2937}}\
         label{{display:block;margin:.75rem 0 .25rem}}input,select{{width:100%;padding:.5rem;box-sizing:border-box}}\
         button{{margin-top:1rem;padding:.6rem 1.2rem;background:#111827;color:#fff;border:0;border-radius:.4rem}}\
         button.secondary{{background:#fff;color:#111827;border:1px solid #d1d5db;margin-left:.5rem}}\
         table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.4rem;border-bottom:1px solid #e5e7eb}}\
         td button{{margin:0 .25rem 0 0;padding:.3rem .6rem}}\
         .err{{color:#b91c1c}}.muted{{color:#6b7280;font-size:.9rem}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = esc(title),
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
            let message = "This Connect link is invalid or has expired.";
            // In the SDK's iframe the host page learns of it (and closes the iframe).
            let tell_host = if q.sdk_host_url.is_some() {
                let m = serde_json::json!({"name": "finch-auth-message-v2", "kind": "error",
                    "error": {"shouldClose": true, "message": message, "type": "validation_error"}});
                post_message(&m, &q.target_origin())
            } else {
                String::new()
            };
            page(StatusCode::BAD_REQUEST, "Session not found", &format!("<p class=\"err\">{message}</p>{tell_host}"))
        },
    )
}

/// `GET /authorize`.
pub async fn show(State(s): State<Shared>, Query(q): Query<AuthorizeQuery>) -> Response {
    let sess = match session_or_error(&s, &q) {
        Ok(x) => x,
        Err(r) => return r,
    };
    login_form(&sess, &q, None, StatusCode::OK)
}

fn login_form(sess: &crate::world::Session, q: &AuthorizeQuery, error: Option<&str>, status: StatusCode) -> Response {
    let provider = sess.provider.clone().unwrap_or_else(|| "gusto".into());
    let who = sess.customer_name.clone().unwrap_or_default();
    let purpose = if sess.reauth_connection.is_some() { "Reconnect" } else { "Connect" };
    let err = error.map(|e| format!("<p class=\"err\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let embedded = sess.redirect_uri.is_none();
    let body = format!(
        "<p>{purpose} <strong>{who}</strong>'s payroll system. Requested access: {products}.</p>{err}\
         <form method=\"post\">\
         <label for=\"provider\">Provider</label><input id=\"provider\" name=\"provider\" value=\"{provider}\">\
         <label for=\"username\">Username</label><input id=\"username\" name=\"username\" value=\"good_user\" autocomplete=\"off\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" value=\"good_pass\" autocomplete=\"off\">\
         <button type=\"submit\">{purpose}</button>{cancel}</form>\
         <p class=\"muted\">Finch emulator · sandbox credentials good_user / good_pass</p>{cancel_script}",
        who = esc(&who),
        products = esc(&sess.products.join(", ")),
        provider = esc(&provider),
        cancel = if embedded {
            " <button type=\"button\" id=\"cancel\" class=\"secondary\">Cancel</button>"
        } else {
            " <button type=\"submit\" name=\"action\" value=\"deny\" class=\"secondary\" formnovalidate>Decline</button>"
        },
        cancel_script = if embedded {
            let closed = serde_json::json!({"name": "finch-auth-message-v2", "kind": "closed"});
            format!(
                "<script>document.getElementById('cancel').onclick=function(){{{}}};</script>",
                post_message_js(&closed, &q.target_origin())
            )
        } else {
            String::new()
        },
    );
    page(status, &format!("{purpose} your payroll"), &body)
}

/// `POST /authorize`: the employer logged in (or picked entities).
pub async fn submit(State(s): State<Shared>, Query(q): Query<AuthorizeQuery>, body: axum::body::Bytes) -> Response {
    let login = Login::parse(&body);
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
    if login.action.as_deref() == Some("deny") {
        return declined(&sess, &q);
    }
    let multi = login.password == "multi_entity";
    if !login.username.starts_with("good_user") || !(login.password == "good_pass" || multi) {
        return login_form(
            &sess,
            &q,
            Some("Those credentials were not accepted by the provider."),
            StatusCode::UNAUTHORIZED,
        );
    }
    if multi && sess.reauth_connection.is_none() {
        let Some(picked) = login.entities.clone() else { return entity_picker(&s, &sess, &login) };
        if picked.is_empty() {
            return entity_picker(&s, &sess, &login);
        }
    }
    let code = issue_code(&s, &sess, &login);
    hand_back(&sess, &q, &code)
}

/// The company's entities, to pick one or several (Finch Sandbox's `multi_entity` login).
fn entity_picker(s: &Shared, sess: &Session, login: &Login) -> Response {
    let company = s.world().company_for(sess.customer_name.as_deref(), &login.username);
    let boxes: String = company
        .entities
        .iter()
        .map(|e| {
            format!(
                "<label><input type=\"checkbox\" name=\"entity\" value=\"{id}\" style=\"width:auto\"> {name} \
                 <span class=\"muted\">{source}</span></label>",
                id = esc(&e.id),
                name = esc(&e.name),
                source = esc(&e.source_id),
            )
        })
        .collect();
    let hidden = |k: &str, v: &str| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v));
    let body = format!(
        "<p>{company} has several entities. Pick the ones to connect.</p>\
         <form method=\"post\">{boxes}{h1}{h2}{h3}{h4}<button type=\"submit\">Connect</button></form>",
        company = esc(&company.name),
        h1 = hidden("provider", login.provider.as_deref().unwrap_or("")),
        h2 = hidden("username", &login.username),
        h3 = hidden("password", &login.password),
        h4 = hidden("picked", "1"),
    );
    page(StatusCode::OK, "Choose entities", &body)
}

/// Completes the session: the connection (new, or the re-authenticated one, connected again)
/// and a fresh code for it.
fn issue_code(s: &Shared, sess: &Session, login: &Login) -> String {
    let code = uuid::Uuid::new_v4().to_string();
    let mut w = s.world();
    let connection_id = match &sess.reauth_connection {
        Some(id) => {
            if let Some(c) = w.connections.get_mut(id) {
                c.status = "connected".into();
                for e in c.entities.iter_mut().filter(|e| e.status != "disconnected") {
                    e.status = "connected".into();
                }
            }
            id.clone()
        }
        None => {
            let provider = login
                .provider
                .clone()
                .filter(|p| !p.trim().is_empty())
                .or(sess.provider.clone())
                .unwrap_or_else(|| "gusto".into());
            let auth = sess
                .auth_method
                .clone()
                .unwrap_or_else(|| if sess.manual { "assisted".into() } else { "credential".into() });
            let company = w.company_for(sess.customer_name.as_deref(), &login.username);
            let new = crate::world::NewConnection {
                customer_id: sess.customer_id.clone(),
                customer_name: sess.customer_name.clone(),
                customer_email: sess.customer_email.clone(),
                provider_id: provider,
                products: sess.products.clone(),
                auth_type: auth,
                manual: sess.manual,
            };
            w.connect(new, &company, login.entities.as_deref().unwrap_or_default(), sess.sandbox.as_deref())
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
    code
}

/// The code back to the app: a redirect to the session's `redirect_uri`, or the Connect SDK's
/// `postMessage` for the embedded flow.
fn hand_back(sess: &Session, q: &AuthorizeQuery, code: &str) -> Response {
    match &sess.redirect_uri {
        Some(uri) => {
            let Ok(mut url) = url::Url::parse(uri) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    "Bad redirect",
                    "<p class=\"err\">The session's redirect_uri is not a URL.</p>",
                );
            };
            url.query_pairs_mut().append_pair("code", code);
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
                "<p>Connected. You can close this window.</p><pre id=\"code\" data-code=\"{c}\"></pre>{script}",
                c = esc(code),
                script = post_message(&msg, &q.target_origin()),
            );
            page(StatusCode::OK, "Connected", &body)
        }
    }
}

/// The employer declined: back to the app as OAuth 2.0 says an authorization server does
/// (RFC 6749 §4.1.2.1) — `error=access_denied`, a description, the state — and no code. Finch
/// documents no error redirect; this is the standard shape a Connect redirect would take.
fn declined(sess: &Session, q: &AuthorizeQuery) -> Response {
    let Some(uri) = &sess.redirect_uri else {
        return page(StatusCode::BAD_REQUEST, "Declined", "<p>You declined to connect. You can close this window.</p>");
    };
    let Ok(mut url) = url::Url::parse(uri) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Bad redirect",
            "<p class=\"err\">The session's redirect_uri is not a URL.</p>",
        );
    };
    url.query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The employer declined to connect their payroll system.");
    if let Some(st) = &q.state {
        url.query_pairs_mut().append_pair("state", st);
    }
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = header::HeaderValue::from_str(url.as_str()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /_emulator/`: the emulator's dashboard.
pub async fn dashboard(State(s): State<Shared>) -> Response {
    let mut all: Vec<_> = s.world().connections.values().cloned().collect();
    all.sort_by_key(|c| c.created_at);
    let rows: String = all
        .iter()
        .map(|c| {
            let buttons: String = [("reauth", "Needs reauth"), ("connected", "Connected"), ("error_permissions", "Error")]
                .iter()
                .filter(|(status, _)| *status != c.status && !c.disconnected)
                .map(|(status, label)| {
                    format!(
                        "<form method=\"post\" action=\"/_emulator/dashboard/connections/{id}/status\" style=\"display:inline\">\
                         <input type=\"hidden\" name=\"status\" value=\"{status}\">\
                         <button type=\"submit\" data-status=\"{status}\">{label}</button></form>",
                        id = esc(&c.id),
                    )
                })
                .collect();
            let entities: String = c
                .entities
                .iter()
                .map(|e| {
                    format!(
                        "<div data-entity-id=\"{id}\">{name} <span class=\"muted\">{status}</span></div>",
                        id = esc(&e.id),
                        name = esc(&e.name),
                        status = esc(&e.status)
                    )
                })
                .collect();
            format!(
                "<tr data-connection-id=\"{id}\"><td>{customer}</td><td>{provider}</td><td>{company}</td>\
                 <td>{entities}</td><td class=\"status\">{status}</td><td>{buttons}</td></tr>",
                id = esc(&c.id),
                customer = esc(c.customer_id.as_deref().unwrap_or("—")),
                provider = esc(&c.provider_id),
                company = esc(&c.company_name),
                status = if c.disconnected { "disconnected".to_owned() } else { esc(&c.status) },
            )
        })
        .collect();
    let body = if all.is_empty() {
        "<p>No connections yet: connect one through Perch first.</p>".to_owned()
    } else {
        format!(
            "<p>Flip a connection as Finch would: <em>Needs reauth</em> when the employer's credentials stop \
             working. Finch then tells Perch by webhook (<code>account.updated</code>).</p>\
             <table><thead><tr><th>Customer</th><th>Provider</th><th>Company</th><th>Entities</th><th>Status</th><th></th></tr></thead>\
             <tbody>{rows}</tbody></table>"
        )
    };
    let mut r = page_of_width(StatusCode::OK, "Finch emulator", &body, "56rem");
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}
