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
//!
//! **The sync queue is wired apart** ([`AppState::build_sending`], [`AppState::with_sync_queue`]):
//! only the five functions that send sync work link the SQS client. Built into every
//! function, it added 0.9 MB to each binary and pushed the largest past G6's 10 MB
//! (BENCHMARKS.md); the linker drops what no `main` calls.

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

    /// [`Self::build`] for a function that sends sync work: also wires the sync queue
    /// (`SYNC_QUEUE_URL`), its client built in init when `services` names [`Service::Sqs`].
    pub async fn build_sending(config: Config, services: &[Service]) -> Result<Self, Error> {
        let sdk = crate::aws::sdk::sdk_config().await?;
        let rest: Vec<Service> = services.iter().copied().filter(|s| *s != Service::Sqs).collect();
        let app = Self::on_aws(config, &sdk, &rest)?.with_sync_queue(&sdk, services.contains(&Service::Sqs));
        app.prewarm().await;
        Ok(app)
    }

    /// Adds the sync queue named by `SYNC_QUEUE_URL` (none when it is unset), building its
    /// client now if `in_init`.
    pub fn with_sync_queue(mut self, sdk: &aws_config::SdkConfig, in_init: bool) -> Self {
        self.sync_queue = self
            .config
            .sync_queue_url
            .clone()
            .map(|url| Arc::new(SqsSyncQueue::new(lazy(sdk, aws_sdk_sqs::Client::new), url)));
        if let (true, Some(queue)) = (in_init, &self.sync_queue) {
            queue.prewarm();
        }
        self
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

    /// Builds on an already-loaded SDK configuration (tests point it at their emulator), without
    /// the sync queue: [`Self::with_sync_queue`] adds it. Naming [`Service::Sqs`] here is a
    /// wiring mistake, refused so a sender cannot start without its queue.
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
        let app = Self::new(config, store, cipher, secrets, EventPublisher::new(sink));
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
                    return Err(Error::Configuration(
                        "Service::Sqs given to AppState::on_aws: a function that sends sync work is built with \
                         AppState::build_sending"
                            .into(),
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build()
    }

    fn config(queue: Option<&str>) -> Config {
        Config::from_lookup(|k| match k {
            "SYNC_QUEUE_URL" => queue.map(str::to_owned),
            "TABLE_NAME" | "FINCH_SECRET_ID" => Some("perch".into()),
            "KMS_KEY_ID" => Some("alias/perch".into()),
            "FINCH_API_URL" => Some("http://finch.test".into()),
            "FINCH_REDIRECT_URI" => Some("http://perch.test/connect/callback".into()),
            "APP_RETURN_URL" => Some("http://app.test/connections".into()),
            _ => None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_sync_queue_is_wired_only_on_request() {
        let url = "http://sqs.test/123456789012/perch-sync";
        let plain = AppState::on_aws(config(Some(url)), &sdk(), &[Service::Kms]).unwrap();
        assert!(plain.sync_queue.is_none());
        let refused = AppState::on_aws(config(Some(url)), &sdk(), &[Service::Sqs]).err().unwrap();
        assert!(refused.to_string().contains("build_sending"), "{refused}");
        let sending = AppState::on_aws(config(Some(url)), &sdk(), &[]).unwrap().with_sync_queue(&sdk(), true);
        assert!(sending.sync_queue.is_some());
        let unset = AppState::on_aws(config(None), &sdk(), &[]).unwrap().with_sync_queue(&sdk(), true);
        assert!(unset.sync_queue.is_none(), "no SYNC_QUEUE_URL, no queue");
    }
}
