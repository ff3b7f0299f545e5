//! [`AppState`] on AWS: the DynamoDB, KMS, Secrets Manager and EventBridge adapters over one
//! SDK configuration.
//!
//! Building touches no network: AWS clients and the HTTP client connect lazily, and the Finch
//! secret is fetched on first use (see [`crate::secrets`]). Clients other than DynamoDB's are
//! themselves built on first use ([`crate::lazy`]), except those in the function's `SERVICES`,
//! which are built here, in init, so their cost never lands on a first request.
//!
//! **One connection opened in init** ([`AppState::prewarm`], on unless `PREWARM_CONNECTIONS`
//! is `false`): every function's first remote call is to DynamoDB, and a first call pays a TCP
//! and a TLS handshake (with certificate verification) on top of the request. Measured with a
//! loopback TLS endpoint (BENCHMARKS.md, G9), a first request without it took 5.3 times a warm
//! one; with it, 1.5 times, for 2 ms more init. Init runs before any
//! request is routed to the container (and, with Lambda's proactive initialization, often before
//! any request exists), so the time moves off the employer's wait. It is best-effort and
//! bounded: a failure or a slow answer is logged and the function starts anyway, its first
//! request then connecting as it would have. Finch is not pre-warmed: it has no unauthenticated
//! endpoint meant for this, and every request to it counts against the 1,000 per 5 minutes
//! per IP address that the status sweep budgets for.

use std::sync::Arc;

use crate::app::AppState;
use crate::aws::Aws;
use crate::aws::dynamodb::DynamoStore;
use crate::aws::eventbridge::EventBridgeSink;
use crate::aws::kms::KmsCipher;
use crate::aws::secrets_manager::SecretsManagerSource;
use crate::aws::sqs::SqsSyncQueue;
use crate::config::Config;
use crate::domain::Error;
use crate::events::EventPublisher;
use crate::lazy::Lazy;
use crate::secrets::SecretCache;

/// How long init waits for [`AppState::prewarm`]: far above a healthy handshake (milliseconds),
/// far below Lambda's 10 s init limit.
const PREWARM_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The services whose clients a function can build in init. (DynamoDB is not one: every
/// function reads the table, so its client is always built.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Kms,
    SecretsManager,
    EventBridge,
    /// Finch's HTTP client (its TLS roots are parsed when it is built).
    Finch,
    /// SQS, for the sync queue (`SYNC_QUEUE_URL`).
    Sqs,
}

impl AppState<Aws> {
    /// Loads the AWS configuration the standard way (environment, role) and builds everything,
    /// building in init the clients of `services`. Locally, `AWS_ENDPOINT_URL*` points the
    /// same code at the emulator.
    pub async fn build(config: Config, services: &[Service]) -> Result<Self, Error> {
        let app = Self::on_aws(config, &crate::aws::sdk::sdk_config().await?, services)?;
        app.prewarm().await;
        Ok(app)
    }

    /// Opens the DynamoDB connection now (see the module's documentation), unless
    /// `PREWARM_CONNECTIONS` is `false`. Never fails: at worst the first request connects.
    pub async fn prewarm(&self) {
        if !self.config.prewarm_connections {
            return;
        }
        match tokio::time::timeout(PREWARM_LIMIT, self.store.open_connection()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e.chain(), "DynamoDB connection not opened in init; the first request opens it")
            }
            Err(_) => tracing::warn!(
                limit_ms = PREWARM_LIMIT.as_millis() as u64,
                "DynamoDB connection not opened in init in time; the first request opens it"
            ),
        }
    }

    /// Builds on an already-loaded SDK configuration (tests point it at their emulator).
    pub fn on_aws(config: Config, sdk: &aws_config::SdkConfig, services: &[Service]) -> Result<Self, Error> {
        let kms = lazy(sdk, aws_sdk_kms::Client::new);
        let secrets_manager = lazy(sdk, aws_sdk_secretsmanager::Client::new);
        let eventbridge = lazy(sdk, aws_sdk_eventbridge::Client::new);
        let store = Arc::new(
            DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config.table_name.clone())
                .with_records(config.records_table_name.clone()),
        );
        let cipher = Arc::new(KmsCipher::new(kms.clone(), config.kms_key_id.clone()));
        let secrets = SecretCache::new(
            Arc::new(SecretsManagerSource::new(secrets_manager.clone(), config.finch_secret_id.clone())),
            config.secret_cache_ttl,
        );
        let sink = config.event_bus_name.clone().map(|bus| Arc::new(EventBridgeSink::new(eventbridge.clone(), bus)));
        let events_on = sink.is_some();
        let queue = config
            .sync_queue_url
            .clone()
            .map(|url| Arc::new(SqsSyncQueue::new(lazy(sdk, aws_sdk_sqs::Client::new), url)));
        let mut app = Self::new(config, store, cipher, secrets, EventPublisher::new(sink));
        app.sync_queue = queue;
        for service in services {
            match service {
                Service::Kms => {
                    kms.get();
                }
                Service::SecretsManager => {
                    secrets_manager.get();
                }
                // Without a bus there is nothing to build.
                Service::EventBridge if events_on => {
                    eventbridge.get();
                }
                Service::EventBridge => {}
                Service::Finch => app.finch.prewarm()?,
                Service::Sqs => {
                    if let Some(q) = &app.sync_queue {
                        q.prewarm();
                    }
                }
            }
        }
        Ok(app)
    }
}

fn lazy<C: 'static>(sdk: &aws_config::SdkConfig, build: fn(&aws_config::SdkConfig) -> C) -> Lazy<C> {
    let sdk = sdk.clone();
    Lazy::new(move || build(&sdk))
}
