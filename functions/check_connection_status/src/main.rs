use check_connection_status::{Sweeper, handle};
use lambda_runtime::{run, service_fn};
use perch::sweep::SweepSettings;
use perch::{AppState, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    perch::telemetry::init();
    let sdk = perch::app::sdk_config().await?;
    let app = AppState::from_sdk_config(Config::from_env()?, &sdk)?;
    app.prewarm(check_connection_status::SERVICES)?;
    let sweeper = Sweeper::new(&app, SweepSettings::from_env()?, aws_sdk_sqs::Client::new(&sdk));
    run(service_fn(|event| handle(&sweeper, event))).await
}
