//! The in-process layer: Perch's flows on the memory adapters (`perch::memory`) against the
//! Finch emulator running inside the test process, on a random loopback port. No moto, no
//! DynamoDB Local, no local router: a test takes milliseconds, so every branch gets one.
//!
//! The stack tests ([`crate::TestStack`]) run the same flows through the real AWS SDK on moto
//! and DynamoDB Local; this layer is where the branches are, that one is where the real path is.

use std::net::SocketAddr;
use std::sync::Arc;

use perch::domain::{AuthorizationCode, CustomerId, Error, FlowMode};
use perch::flows::callback::{CallbackInput, CallbackOutcome, complete_callback};
use perch::flows::session::{NewSession, NewSessionRequest, create_session};
use perch::memory::{Memory, Parts};
use perch::{AppState, Config};
use serde_json::{Value, json};

/// One Perch on memory adapters, with its own in-process Finch.
pub struct Fast {
    pub finch: finch_emulator::Running,
    pub app: Arc<AppState<Memory>>,
    pub mem: Parts,
    pub config: Config,
    /// The base64 webhook secret in Perch's Finch secret.
    pub webhook_secret: String,
    secret_json: String,
    http: reqwest::Client,
}

impl Drop for Fast {
    /// As every stack test, every in-process test is a log-hygiene test: none of the tokens and
    /// codes Finch issued, nor the keys in Perch's secret, may reach the captured logs.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let logs = crate::captured_logs();
        let world = self.finch.shared.world();
        let mut secrets: Vec<String> = world.tokens.keys().chain(world.codes.keys()).cloned().collect();
        let parsed: Value = serde_json::from_str(&self.secret_json).unwrap_or(Value::Null);
        for k in ["client_secret", "state_key", "webhook_secret"] {
            secrets.extend(parsed[k].as_str().map(str::to_owned));
        }
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(!logs.contains(s.as_str()), "a secret ({} characters) reached the logs", s.len());
        }
    }
}

impl Fast {
    /// A fresh Perch and Finch; `tweak` may change the configuration's environment.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        crate::init_logs();
        let emu = finch_emulator::EmulatorConfig::default();
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let finch = finch_emulator::spawn(emu.clone(), addr).await.expect("start the Finch emulator");
        let mut vars: std::collections::HashMap<String, String> = [
            ("TABLE_NAME", "memory"),
            ("KMS_KEY_ID", "memory-key"),
            ("FINCH_SECRET_ID", "memory"),
            ("FINCH_REDIRECT_URI", "http://perch.test/connect/callback"),
            ("APP_RETURN_URL", crate::APP_RETURN_URL),
            ("FINCH_TIMEOUT_MS", "2000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        vars.insert("FINCH_API_URL".into(), finch.base_url.clone());
        for (k, v) in env {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("config");
        let secret_json = perch::memory::sample_secret(&emu.client_id, &emu.client_secret).expect("secret");
        let parsed: Value = serde_json::from_str(&secret_json).expect("secret JSON");
        let webhook_secret = parsed["webhook_secret"].as_str().expect("webhook_secret").to_owned();
        let (mut app, mem) = AppState::in_memory(config.clone(), secret_json.clone()).expect("in-memory state");
        // A clock the test moves (`f.app.clock.advance`): a link's 30 days in no time.
        app.clock = perch::domain::Clock::adjustable();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { finch, app: Arc::new(app), mem, config, webhook_secret, secret_json, http }
    }

    /// Another state on the same memory adapters whose Finch is at `finch_url` (a dead port).
    pub fn with_finch_at(&self, finch_url: &str) -> AppState<Memory> {
        let mut config = self.config.clone();
        config.finch_api_url = url::Url::parse(finch_url).expect("url");
        let secrets = perch::secrets::SecretCache::new(self.mem.secret.clone(), config.secret_cache_ttl);
        let events = perch::events::EventPublisher::new(Some(self.mem.events.clone()));
        let mut app = AppState::new(config, self.mem.store.clone(), self.mem.cipher.clone(), secrets, events);
        app.sync_queue = Some(self.mem.sync_queue.clone());
        app.clock = self.app.clock.clone();
        app
    }

    pub fn customer(name: &str) -> CustomerId {
        CustomerId::parse(name).expect("customer")
    }

    /// A new Connect session for `customer` with `body`.
    pub async fn session(&self, customer: &str, body: Value) -> Result<NewSession, Error> {
        let req: NewSessionRequest = serde_json::from_value(body).expect("session request");
        create_session(&self.app, &Self::customer(customer), &req).await
    }

    /// Logs in at the emulator's Connect page for a redirect-flow session; returns the code
    /// and state Finch redirects back with.
    pub async fn login(&self, connect_url: &str) -> (String, Option<String>) {
        let r = self
            .http
            .post(connect_url)
            .form(&[("provider", "gusto"), ("username", "good_user"), ("password", "good_pass")])
            .send()
            .await
            .expect("POST Connect page");
        assert_eq!(r.status(), 302, "the Connect page redirects to the callback");
        let location = crate::location(&r);
        (crate::query(&location, "code").expect("code"), crate::query(&location, "state"))
    }

    /// Logs in as `username` at `provider` (with `picks`, through the entity picker): the code
    /// and state Finch redirects back with.
    pub async fn login_as(
        &self,
        connect_url: &str,
        provider: &str,
        username: &str,
        picks: Option<&[usize]>,
    ) -> (String, String) {
        let r = crate::finch_login(&self.http, connect_url, provider, username, picks).await;
        assert_eq!(r.status(), 302, "the Connect page redirects to the callback");
        let location = crate::location(&r);
        (crate::query(&location, "code").expect("code"), crate::query(&location, "state").expect("state"))
    }

    /// A session and a login: the code and state of a redirect flow, ready for the callback.
    pub async fn code_for(&self, customer: &str) -> (String, String) {
        let s = self.session(customer, json!({"products": ["company", "directory"]})).await.expect("session");
        let (code, state) = self.login(&s.connect_url).await;
        (code, state.expect("state"))
    }

    /// A fresh embedded-flow state of `customer` (its session's code unused).
    pub async fn embedded_state(&self, customer: &str) -> String {
        let s = self.session(customer, json!({"products": ["company"], "flow": "embedded", "additional": true}));
        s.await.expect("session").state.expect("state")
    }

    /// The keyed hash a code's exchange marker is stored under.
    pub async fn code_hash(&self, code: &str) -> perch::domain::CodeHash {
        let secrets = self.app.secrets.get().await.expect("secret");
        let code = AuthorizationCode::new(code.to_owned());
        perch::crypto::code_hash(secrecy::ExposeSecret::expose_secret(&secrets.state_key), &code).expect("hash")
    }

    /// The callback of a redirect flow.
    pub async fn redirect_callback(&self, code: &str, state: Option<&str>) -> Result<CallbackOutcome, Error> {
        self.callback_on(&self.app, code, state, FlowMode::Redirect, None).await
    }

    /// The callback on any state (another Finch, another flow, another caller).
    pub async fn callback_on(
        &self,
        app: &AppState<Memory>,
        code: &str,
        state: Option<&str>,
        mode: FlowMode,
        caller: Option<&str>,
    ) -> Result<CallbackOutcome, Error> {
        let input = CallbackInput {
            code: AuthorizationCode::parse(code)?,
            state: state.map(str::to_owned),
            mode,
            caller: caller.map(Self::customer),
        };
        complete_callback(app, input).await
    }

    /// A whole redirect flow for `customer`.
    pub async fn connect(&self, customer: &str) -> CallbackOutcome {
        let (code, state) = self.code_for(customer).await;
        self.redirect_callback(&code, Some(&state)).await.expect("callback")
    }

    /// Requests the emulator saw for a method and path.
    pub fn finch_calls(&self, method: &str, path: &str) -> usize {
        self.finch.requests().iter().filter(|r| r.method == method && r.path == path).count()
    }

    /// Injects a fault at the emulator.
    pub fn inject(&self, fault: Value) {
        let f: finch_emulator::world::Fault = serde_json::from_value(fault).expect("fault");
        self.finch.shared.world().faults.push(f);
    }

    /// The status-change events published so far, as `(source, previous, status)`.
    pub fn events(&self) -> Vec<(String, Value, String)> {
        self.mem
            .events
            .events()
            .into_iter()
            .map(|e| {
                (
                    e["source"].as_str().unwrap_or("").to_owned(),
                    e["previous_status"].clone(),
                    e["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// A signed `account.updated` delivery for `connection_id`, as Finch sends it.
    pub fn webhook(&self, body: &Value, at: i64) -> (String, String, String, Vec<u8>) {
        let id = finch_emulator::webhooks::new_event_id();
        let text = body.to_string();
        let sig = finch_emulator::webhooks::sign(&self.webhook_secret, &id, at, &text).expect("sign");
        (id, at.to_string(), sig, text.into_bytes())
    }
}
