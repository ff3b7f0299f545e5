use lambda_runtime::{run, service_fn};
use perch::flows::sync::SyncSettings;
use perch::{AppState, Config};
use sync_worker::{Worker, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    perch::runtime::telemetry::init();
    let app = AppState::build_sending(Config::from_env()?, sync_worker::SERVICES).await?;
    let worker = Worker { app: &app, settings: SyncSettings::from_env()? };
    run(service_fn(|event| handle(&worker, event))).await
}
