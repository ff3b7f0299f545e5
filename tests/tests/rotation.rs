//! Key rotation: a new KMS key for new writes, old ciphertexts still decrypting, and a
//! re-encryption pass that moves them (inside KMS) and can run again.

use perch::crypto::TokenCipher;
use std::sync::Arc;

use perch::domain::ConnectionId;
use perch::flows::rotation;
use perch::{AppState, Config};
use perch_tests::TestStack;

#[tokio::test]
async fn tokens_move_to_a_new_key_and_old_ones_decrypt_meanwhile() {
    let stack = TestStack::start().await;
    let old_ids = vec![stack.connect("acme").await, stack.connect("globex").await];
    let tokens_before: Vec<String> = {
        let mut t = Vec::new();
        for id in &old_ids {
            let rec = stack.record(id).await;
            t.push(
                stack
                    .app
                    .cipher
                    .decrypt(rec.token.as_ref().unwrap(), &rec.connection_id, &rec.customer)
                    .await
                    .unwrap()
                    .expose_secret()
                    .to_owned(),
            );
        }
        t
    };
    let new_key = stack.kms.create_key().send().await.unwrap().key_metadata.unwrap();
    let new_arn = new_key.arn.unwrap();

    // The functions now encrypt under the new key; the old tokens keep working (disconnect decrypts one).
    let mut config: Config = stack.config.clone();
    config.kms_key_id = new_arn.clone();
    let rotated = Arc::new(AppState::on_aws(config, &perch_tests::sdk_config().await, &[]).unwrap());
    let customer = perch::domain::CustomerId::parse("acme").unwrap();
    assert_eq!(
        perch::flows::lifecycle::disconnect(&rotated, &customer, &old_ids[0]).await.unwrap(),
        perch::flows::lifecycle::Disconnected::Now
    );

    // Re-encrypt what is left: globex's token moves, keeps its value and its context binding.
    let report = rotation::reencrypt_all(&rotated, &new_arn).await.unwrap();
    assert_eq!((report.migrated, report.failed, report.skipped), (1, 0, 0));
    let rec = stack.record(&old_ids[1]).await;
    let moved = rec.token.as_ref().unwrap();
    assert_eq!(moved.key_id, new_arn);
    let plain = rotated.cipher.decrypt(moved, &rec.connection_id, &rec.customer).await.unwrap();
    assert_eq!(plain.expose_secret(), tokens_before[1]);
    let elsewhere = ConnectionId::parse("c-other").unwrap();
    assert!(rotated.cipher.decrypt(moved, &elsewhere, &rec.customer).await.is_err(), "still bound to its connection");

    // Idempotent: nothing left to move.
    assert_eq!(rotation::reencrypt_all(&rotated, &new_arn).await.unwrap(), rotation::Reencrypted::default());
}
