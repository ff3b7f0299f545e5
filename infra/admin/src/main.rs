//! `perch-admin reencrypt --to <key id, ARN or alias>`
//!
//! Runs with the functions' environment (`TABLE_NAME`, `KMS_KEY_ID`, … and AWS credentials
//! allowed `kms:ReEncrypt*` on both keys, `kms:DescribeKey`, `dynamodb:Scan`/`UpdateItem`).
//! Safe to run while Perch serves traffic and to run again; see `perch::flows::rotation`.

use perch::flows::rotation;
use perch::{AppState, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    perch::runtime::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let to = match args.as_slice() {
        [cmd, flag, key] if cmd == "reencrypt" && flag == "--to" => key.clone(),
        _ => return Err("usage: perch-admin reencrypt --to <key id, ARN or alias>".into()),
    };
    let app = AppState::build(Config::from_env()?, &[]).await?;
    let report = rotation::reencrypt_all(&app, &to).await.map_err(|e| e.chain())?;
    println!("{}", serde_json::to_string(&report)?);
    if report.failed > 0 || report.skipped > 0 {
        return Err(format!("{} failed and {} changed meanwhile: run it again", report.failed, report.skipped).into());
    }
    Ok(())
}
