use lambda_http::{run, service_fn};
use perch::{AppState, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    perch::runtime::telemetry::init();
    let app = AppState::build_sending(Config::from_env()?, disconnect::SERVICES).await?;
    run(service_fn(|req| async { Ok::<_, std::convert::Infallible>(disconnect::handle(&app, req).await) })).await
}
