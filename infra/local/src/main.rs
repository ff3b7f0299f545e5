//! `perch-local`: serves Perch's functions on localhost (see the crate docs).
//!
//! Configuration is the functions' own environment (`TABLE_NAME`, `KMS_KEY_ID`, …, with
//! `AWS_ENDPOINT_URL` pointing at the emulator), plus `PORT` (default 3000) and
//! `DEV_JWT_ISSUER` / `DEV_JWT_AUDIENCE` for the development authorizer, and `PERCH_WEB_DIR`
//! (default: the repository's `web/`) for the connections page.

use std::sync::Arc;

use perch::{AppState, Config};
use perch_local::{DevAuth, router};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    perch::runtime::telemetry::init();
    if std::env::args().nth(1).as_deref() == Some("bootstrap") {
        return bootstrap().await;
    }
    let config = Config::from_env()?;
    let port: u16 = std::env::var("PORT").ok().map(|p| p.parse()).transpose()?.unwrap_or(3000);
    let auth = DevAuth::random(
        std::env::var("DEV_JWT_ISSUER").unwrap_or_else(|_| "perch-local".into()),
        std::env::var("DEV_JWT_AUDIENCE").unwrap_or_else(|_| "perch".into()),
        config.customer_claim.clone(),
    )?;
    // Locally every client is built on first use: no cold start to optimise.
    let sdk = perch::aws::sdk::sdk_config().await?;
    let app = Arc::new(AppState::on_aws(config, &sdk, &[])?.with_sync_queue(&sdk, false));
    // The sync worker, fed by the sync queue and the schedule (Lambda's part, locally).
    let settings = perch::flows::sync::SyncSettings::from_env()?;
    let _worker =
        perch_local::worker::spawn(Arc::clone(&app), &sdk, settings, perch_local::worker::schedule_from_env());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("perch-local listening on http://{addr}");
    println!(
        "get a token: curl -s -X POST http://{addr}/dev/token -H 'content-type: application/json' -d '{{\"customer_id\":\"acme\"}}'"
    );
    axum::serve(listener, router(app, auth)).await?;
    Ok(())
}

/// `perch-local bootstrap`: tables, key, secret and queue named by `TABLE_NAME`,
/// `RECORDS_TABLE_NAME`, `KMS_KEY_ID` (an alias), `FINCH_SECRET_ID` and `SYNC_QUEUE_URL` (its
/// last segment is the queue's name), the secret holding `FINCH_CLIENT_ID` /
/// `FINCH_CLIENT_SECRET` (and `FINCH_WEBHOOK_SECRET` when set).
async fn bootstrap() -> Result<(), Box<dyn std::error::Error>> {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} must be set for bootstrap"));
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let (table, alias, secret, id, pw) = (
        var("TABLE_NAME")?,
        var("KMS_KEY_ID")?,
        var("FINCH_SECRET_ID")?,
        var("FINCH_CLIENT_ID")?,
        var("FINCH_CLIENT_SECRET")?,
    );
    let webhook = std::env::var("FINCH_WEBHOOK_SECRET").ok();
    let records = std::env::var("RECORDS_TABLE_NAME").ok();
    let queue = std::env::var("SYNC_QUEUE_URL").ok();
    let queue_name = queue.as_deref().and_then(|u| u.rsplit('/').next()).map(str::to_owned);
    let names = perch_local::bootstrap::Names {
        table: &table,
        records_table: records.as_deref(),
        sync_queue: queue_name.as_deref(),
        key_alias: &alias,
        secret_id: &secret,
        client_id: &id,
        client_secret: &pw,
        webhook_secret: webhook.as_deref(),
    };
    let created = perch_local::bootstrap::bootstrap(&sdk, &names).await.map_err(|e| e.chain())?;
    if let (Some(expected), Some(made)) = (&queue, &created.sync_queue_url)
        && expected != made
    {
        return Err(format!("SYNC_QUEUE_URL is {expected}, but the emulator named the queue {made}").into());
    }
    println!("bootstrapped table {table}, key {alias} ({}), secret {secret}", created.key_id);
    Ok(())
}
