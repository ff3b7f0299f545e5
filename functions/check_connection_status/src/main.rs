use check_connection_status::{Sweeper, handle};
use lambda_runtime::{run, service_fn};
use perch::aws::sqs::SqsQueue;
use perch::flows::sweep::{SweepSettings, WorkQueue};
use perch::{AppState, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    perch::runtime::telemetry::init();
    let sdk = perch::aws::sdk::sdk_config().await?;
    let app = AppState::on_aws(Config::from_env()?, &sdk, check_connection_status::SERVICES)?;
    app.prewarm().await;
    let settings = SweepSettings::from_env()?;
    let queue = settings
        .queue_url
        .clone()
        .map(|url| Box::new(SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), url)) as Box<dyn WorkQueue>);
    let sweeper = Sweeper::new(&app, settings, queue);
    run(service_fn(|event| handle(&sweeper, event))).await
}
