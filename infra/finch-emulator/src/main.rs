//! `finch-emulator [--port N] [--host ADDR] [--lenient]`
//!
//! Credentials come from `FINCH_CLIENT_ID` / `FINCH_CLIENT_SECRET` (defaults: the emulator's
//! built-in pair); status changes are delivered as signed webhooks to `FINCH_WEBHOOK_URL` with
//! `FINCH_WEBHOOK_SECRET` when both are set. Prints `listening on http://…` once ready.

use std::net::SocketAddr;

use finch_emulator::{EmulatorConfig, spawn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // RUST_LOG as `info` or `info,finch_emulator=debug`; anything else is `info`.
    let filter: tracing_subscriber::filter::Targets =
        std::env::var("RUST_LOG").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::level_filters::LevelFilter::INFO)
        });
    tracing_subscriber::registry().with(tracing_subscriber::fmt::layer()).with(filter).init();
    let mut port = 0u16;
    let mut host = "127.0.0.1".to_owned();
    let mut config = EmulatorConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?.parse()?,
            "--host" => host = args.next().ok_or("--host needs a value")?,
            "--lenient" => config.strict = false,
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: finch-emulator [--port N] [--host ADDR] [--lenient]"
                )
                .into());
            }
        }
    }
    if let Ok(id) = std::env::var("FINCH_CLIENT_ID") {
        config.client_id = id;
    }
    if let Ok(secret) = std::env::var("FINCH_CLIENT_SECRET") {
        config.client_secret = secret;
    }
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let running = spawn(config, addr).await?;
    if let (Ok(url), Ok(secret)) = (std::env::var("FINCH_WEBHOOK_URL"), std::env::var("FINCH_WEBHOOK_SECRET")) {
        running.shared.world().webhook = Some(finch_emulator::webhooks::Target { url, secret });
    }
    println!("listening on {}", running.base_url);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
