//! `perch-admin`: operator commands (see `lib.rs` and `perch-admin --help`).
//!
//! Runs with the functions' environment (`TABLE_NAME`, `RECORDS_TABLE_NAME`, `SYNC_QUEUE_URL`,
//! `KMS_KEY_ID`, `FINCH_SECRET_ID`, `FINCH_API_URL`, `EVENT_BUS_NAME`, … and AWS credentials
//! allowed what the command does: `dynamodb:Query`/`GetItem`/`UpdateItem`/`DeleteItem` (and
//! `BatchWriteItem` on the records table, whose data a disconnect shreds), `sqs:SendMessage`,
//! `kms:Decrypt`, `events:PutEvents`, `secretsmanager:GetSecretValue` to disconnect; `kms:ReEncrypt*`, `kms:DescribeKey`,
//! `dynamodb:Scan`/`UpdateItem` to re-encrypt). Exits 0 when everything asked was done, 1 when
//! a run left something to retry (its report says what: run it again), 2 on a usage error.

use std::process::ExitCode;

use perch::{AppState, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    perch::runtime::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", perch_admin::USAGE);
        return Ok(ExitCode::SUCCESS);
    }
    let command = match perch_admin::parse(&args) {
        Ok(c) => c,
        Err(usage) => {
            eprintln!("{usage}");
            return Ok(ExitCode::from(2));
        }
    };
    let app = AppState::build(Config::from_env()?, &[]).await?;
    let answer = perch_admin::run(&app, command, &mut std::io::stderr()).await.map_err(|e| e.chain())?;
    println!("{}", serde_json::to_string_pretty(&answer.output)?);
    Ok(if answer.complete { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
