//! Creates what Perch needs on an (emulated) AWS account: the tables, the KMS key, the Finch
//! secret and the sync queue. Idempotent: existing resources are reused. Used by `perch-local bootstrap` (the
//! local stack) and by the tests, which give every test its own names.

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use perch::Error;

/// What to create.
pub struct Names<'a> {
    pub table: &'a str,
    /// The records table of synced data, if wanted.
    pub records_table: Option<&'a str>,
    /// The sync queue's name, if wanted.
    pub sync_queue: Option<&'a str>,
    /// A KMS alias (`alias/…`).
    pub key_alias: &'a str,
    pub secret_id: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    /// The webhook secret to share with the Finch emulator (a random one when `None`).
    pub webhook_secret: Option<&'a str>,
}

/// What was created (or found).
pub struct Created {
    /// The key's id (use it or the alias as `KMS_KEY_ID`).
    pub key_id: String,
    /// The sync queue's URL (`SYNC_QUEUE_URL`), when one was asked for.
    pub sync_queue_url: Option<String>,
}

/// Creates the table, key (with alias) and secret unless they exist.
pub async fn bootstrap(sdk: &aws_config::SdkConfig, n: &Names<'_>) -> Result<Created, Error> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    perch::aws::dynamodb::schema::create_table(&ddb, n.table).await?;
    if let Some(records) = n.records_table {
        perch::aws::dynamodb::schema::create_records_table(&ddb, records).await?;
    }
    let sync_queue_url = match n.sync_queue {
        Some(name) => {
            let sqs = aws_sdk_sqs::Client::new(sdk);
            let q = sqs
                .create_queue()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| Error::aws("sqs", "CreateQueue", false, e))?;
            Some(q.queue_url.ok_or_else(|| Error::internal("CreateQueue returned no URL"))?)
        }
        None => None,
    };

    let kms = aws_sdk_kms::Client::new(sdk);
    let existing =
        kms.describe_key().key_id(n.key_alias).send().await.ok().and_then(|d| d.key_metadata).map(|m| m.key_id);
    let key_id = match existing {
        Some(id) => id,
        None => {
            let key = kms
                .create_key()
                .key_spec(KeySpec::SymmetricDefault)
                .key_usage(KeyUsageType::EncryptDecrypt)
                .description("Perch: Finch access tokens")
                .send()
                .await
                .map_err(|e| Error::aws("kms", "CreateKey", false, e))?;
            let id = key.key_metadata.map(|m| m.key_id).ok_or_else(|| Error::internal("CreateKey returned no key"))?;
            kms.create_alias()
                .alias_name(n.key_alias)
                .target_key_id(&id)
                .send()
                .await
                .map_err(|e| Error::aws("kms", "CreateAlias", false, e))?;
            id
        }
    };

    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    if sm.describe_secret().secret_id(n.secret_id).send().await.is_err() {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
        let webhook = match n.webhook_secret {
            Some(w) => w.to_owned(),
            None => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
                STANDARD.encode(bytes)
            }
        };
        let value = serde_json::json!({
            "client_id": n.client_id,
            "client_secret": n.client_secret,
            "webhook_secret": webhook,
            "state_key": STANDARD.encode(key),
        });
        sm.create_secret()
            .name(n.secret_id)
            .secret_string(value.to_string())
            .send()
            .await
            .map_err(|e| Error::aws("secretsmanager", "CreateSecret", false, e))?;
    }
    Ok(Created { key_id, sync_queue_url })
}
