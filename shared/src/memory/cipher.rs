//! A token cipher without KMS: HMAC-SHA256 as keystream and tag under a random key made per
//! instance, binding every ciphertext to its [`context`] as KMS does. Good enough to keep test
//! tokens out of plain sight and to make a copied ciphertext fail; not a production cipher.

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use zeroize::Zeroizing;

use crate::crypto::match_keys::{self, CustomerMatchKeys, MatchKeyring};
use crate::crypto::records::{self, DataKey, DataKeys, WrappedDataKey};
use crate::crypto::{EncryptedToken, KeyMigration, TokenCipher, context};
use crate::domain::{AccessToken, ConnectionId, CustomerId, Error};

const NONCE: usize = 16;
const TAG: usize = 32;

/// The key names the memory cipher answers to (its "alias" and "ARN").
pub struct MemoryCipher {
    key: [u8; 32],
    key_id: String,
}

impl MemoryCipher {
    /// A cipher whose key is called `key_id`.
    pub fn new(key_id: impl Into<String>) -> Result<Self, Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
        Ok(Self { key, key_id: key_id.into() })
    }

    fn mac(&self, label: &[u8]) -> Result<Hmac<Sha256>, Error> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .map_err(|_| Error::internal("memory cipher key rejected"))?;
        m.update(label);
        Ok(m)
    }

    fn keystream(&self, key_id: &str, nonce: &[u8], len: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(len + 32);
        let mut block = 0u32;
        while out.len() < len {
            let mut m = self.mac(b"stream")?;
            m.update(key_id.as_bytes());
            m.update(nonce);
            m.update(&block.to_be_bytes());
            out.extend_from_slice(&m.finalize().into_bytes());
            block += 1;
        }
        out.truncate(len);
        Ok(out)
    }

    fn tag(&self, key_id: &str, ctx: &[(&str, String); 3], nonce: &[u8], body: &[u8]) -> Result<Vec<u8>, Error> {
        let mut m = self.mac(b"tag")?;
        m.update(key_id.as_bytes());
        for (k, v) in ctx {
            m.update(k.as_bytes());
            m.update(b"=");
            m.update(v.as_bytes());
            m.update(b";");
        }
        m.update(nonce);
        m.update(body);
        Ok(m.finalize().into_bytes().to_vec())
    }

    fn seal(&self, plain: &[u8], key_id: &str, ctx: &[(&str, String); 3]) -> Result<EncryptedToken, Error> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
        let body: Vec<u8> =
            plain.iter().zip(self.keystream(key_id, &nonce, plain.len())?).map(|(p, k)| p ^ k).collect();
        let tag = self.tag(key_id, ctx, &nonce, &body)?;
        Ok(EncryptedToken { ciphertext: [&nonce[..], &body, &tag].concat(), key_id: key_id.to_owned() })
    }

    fn open(&self, token: &EncryptedToken, ctx: &[(&str, String); 3]) -> Result<Vec<u8>, Error> {
        let refused = || Error::TokenUnreadable("InvalidCiphertextException (memory cipher)".into());
        let ct = &token.ciphertext;
        if ct.len() < NONCE + TAG {
            return Err(refused());
        }
        let (nonce, rest) = ct.split_at(NONCE);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let expected = self.tag(&token.key_id, ctx, nonce, body)?;
        if !bool::from(expected.ct_eq(tag)) {
            return Err(refused());
        }
        Ok(body.iter().zip(self.keystream(&token.key_id, nonce, body.len())?).map(|(c, k)| c ^ k).collect())
    }
}

#[async_trait]
impl TokenCipher for MemoryCipher {
    async fn encrypt(
        &self,
        token: &AccessToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error> {
        self.seal(token.expose_secret().as_bytes(), &self.key_id, &context(connection, customer))
    }

    async fn decrypt(
        &self,
        token: &EncryptedToken,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<AccessToken, Error> {
        let plain = self.open(token, &context(connection, customer))?;
        String::from_utf8(plain).map(AccessToken::new).map_err(|_| Error::internal("decrypted token is not UTF-8"))
    }
}

#[async_trait]
impl KeyMigration for MemoryCipher {
    async fn key_arn(&self, key: &str) -> Result<String, Error> {
        Ok(key.to_owned())
    }

    async fn reencrypt(
        &self,
        token: &EncryptedToken,
        to_key: &str,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<EncryptedToken, Error> {
        let ctx = context(connection, customer);
        self.seal(&self.open(token, &ctx)?, to_key, &ctx)
    }
}

impl MemoryCipher {
    /// A fresh 32-byte data key and its wrapping under `ctx`, as `GenerateDataKey` makes them.
    fn generate_data_key(
        &self,
        ctx: &[(&'static str, String); 3],
    ) -> Result<(Zeroizing<[u8; 32]>, WrappedDataKey), Error> {
        let mut plain = Zeroizing::new([0u8; 32]);
        getrandom::fill(plain.as_mut()).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
        let sealed = self.seal(plain.as_ref(), &self.key_id, ctx)?;
        Ok((plain, WrappedDataKey { ciphertext: sealed.ciphertext, key_id: sealed.key_id }))
    }

    /// A wrapped data key's plaintext under `ctx`, as `Decrypt` gives it.
    fn decrypt_data_key(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &[(&'static str, String); 3],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let sealed = EncryptedToken { ciphertext: wrapped.ciphertext.clone(), key_id: wrapped.key_id.clone() };
        Ok(Zeroizing::new(self.open(&sealed, ctx)?))
    }
}

/// Data keys wrapped by the memory cipher under the records' context, as KMS would.
#[async_trait]
impl DataKeys for MemoryCipher {
    async fn generate(
        &self,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<(DataKey, WrappedDataKey), Error> {
        let (plain, wrapped) = self.generate_data_key(&records::context(connection, customer))?;
        Ok((DataKey::from_bytes(plain.as_ref())?, wrapped))
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<DataKey, Error> {
        DataKey::from_bytes(&self.decrypt_data_key(wrapped, &records::context(connection, customer))?)
    }
}

/// Match keys wrapped by the memory cipher under their own context, as KMS would.
#[async_trait]
impl MatchKeyring for MemoryCipher {
    async fn generate_match_key(&self, customer: &CustomerId) -> Result<(CustomerMatchKeys, WrappedDataKey), Error> {
        let (plain, wrapped) = self.generate_data_key(&match_keys::context(customer))?;
        Ok((CustomerMatchKeys::from_bytes(plain.as_ref())?, wrapped))
    }

    async fn unwrap_match_key(
        &self,
        wrapped: &WrappedDataKey,
        customer: &CustomerId,
    ) -> Result<CustomerMatchKeys, Error> {
        CustomerMatchKeys::from_bytes(&self.decrypt_data_key(wrapped, &match_keys::context(customer))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ciphertexts_are_bound_to_their_connection_and_customer() {
        let c = MemoryCipher::new("memory-key").unwrap();
        let (conn, cust) = (ConnectionId::parse("c-1").unwrap(), CustomerId::parse("acme").unwrap());
        let enc = c.encrypt(&AccessToken::new("tok-secret-1"), &conn, &cust).await.unwrap();
        assert!(!String::from_utf8_lossy(&enc.ciphertext).contains("tok-secret-1"));
        assert_eq!(c.decrypt(&enc, &conn, &cust).await.unwrap().expose_secret(), "tok-secret-1");
        let other = ConnectionId::parse("c-2").unwrap();
        assert!(c.decrypt(&enc, &other, &cust).await.is_err());
        assert!(c.decrypt(&enc, &conn, &CustomerId::parse("globex").unwrap()).await.is_err());
        let moved = c.reencrypt(&enc, "memory-key-2", &conn, &cust).await.unwrap();
        assert_eq!(moved.key_id, "memory-key-2");
        assert_eq!(c.decrypt(&moved, &conn, &cust).await.unwrap().expose_secret(), "tok-secret-1");
    }
}
