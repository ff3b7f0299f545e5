//! Key rotation.
//!
//! **The KMS key.** The template turns on KMS automatic rotation: the key id stays, AWS keeps
//! the old key material, and nothing in Perch changes. To move to a *different* key (a new
//! account, a compromised key), point `KMS_KEY_ID` at it: new tokens are encrypted under it at
//! once, and old ones still decrypt because each item records the key that encrypted it
//! (`token_key_id`, which `Decrypt` names). Then run `perch-admin reencrypt`, which moves every
//! remaining ciphertext under the new key with KMS `ReEncrypt` — the token never leaves KMS in
//! plaintext — keeping its encryption context, one version-conditioned write per connection,
//! so it is safe to run while Perch serves traffic and to run again. Once it reports nothing
//! left, remove `kms:Decrypt` on the old key.
//!
//! **The Finch client secret.** Put the new value in the Secrets Manager secret. Each
//! container re-reads it after `SECRET_CACHE_TTL_SECONDS`, and at once when Finch answers
//! `invalid_client`, so no redeploy is needed.

use crate::app::{Adapters, AppState};
use crate::crypto::KeyMigration;
use crate::domain::Error;
use crate::store::ReplaceTokens;

/// What a re-encryption pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reencrypted {
    pub migrated: u64,
    /// Changed by something else during the pass; the next pass picks them up.
    pub skipped: u64,
    pub failed: u64,
}

/// Moves every stored ciphertext under `to_key` (id, ARN or alias).
pub async fn reencrypt_all<A: Adapters>(app: &AppState<A>, to_key: &str) -> Result<Reencrypted, Error> {
    let store: &dyn ReplaceTokens = &*app.store;
    let arn = app.cipher.key_arn(to_key).await?;
    let mut report = Reencrypted::default();
    let mut start: Option<String> = None;
    loop {
        let page = store.scan_tokens_not_under(&arn, start.as_deref(), 100).await?;
        for rec in &page.items {
            let Some(token) = &rec.token else { continue };
            match app.cipher.reencrypt(token, &arn, &rec.connection_id, &rec.customer).await {
                Ok(moved) => {
                    if store.replace_token(&rec.connection_id, rec.version, &moved).await? {
                        report.migrated += 1;
                    } else {
                        report.skipped += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(connection_id = %rec.connection_id, error = %e.chain(), "re-encryption failed");
                    report.failed += 1;
                }
            }
        }
        match page.next {
            Some(n) => start = Some(n),
            None => break,
        }
    }
    tracing::info!(migrated = report.migrated, skipped = report.skipped, failed = report.failed, key = %arn, "re-encryption pass done");
    Ok(report)
}
