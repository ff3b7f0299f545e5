//! Synced HR records at rest: envelope encryption under one data key per connection.
//!
//! A record (a person's individual or employment data, a directory entry, the company) is
//! personal data, and a sync writes thousands of them: one KMS call each is neither affordable
//! nor needed. Each connection gets a 256-bit **data key** from KMS (`GenerateDataKey` under the
//! encryption context of [`context`]: purpose, connection, customer); only its KMS-wrapped copy
//! is stored ([`WrappedDataKey`]). A run unwraps it once (one `Decrypt`) and keeps the plaintext
//! in memory for the run only, in a [`DataKey`] that redacts itself and is zeroed when dropped.
//!
//! From the data key, HKDF-SHA256 derives two keys with distinct labels:
//! - an **AES-256-GCM** key: each record is sealed with a fresh random 96-bit nonce, and its
//!   identity ([`RecordId`]: connection, entity, kind, id) as associated data, so a ciphertext
//!   copied onto another record's item (or another connection's) fails to open;
//! - an **HMAC-SHA256** key for the record's **content hash**, which the change feed compares
//!   to find what changed. Keyed, so a stored hash is no oracle: nobody can confirm a guessed
//!   record (a name and date of birth) against it without the key.
//!
//! **Crypto-shredding.** Every record of a connection is readable only through its wrapped data
//! key: deleting that one item makes all of them unreadable at once, whatever is left to delete.
//!
//! AES-GCM with random nonces stays within its bounds for 2³² seals per key; a connection's
//! key seals one item per changed record per sync, orders of magnitude below that.

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::domain::{ConnectionId, CustomerId, Error};

/// The encryption context of a connection's data key: what it belongs to (as a token's, with
/// its own purpose, so neither ciphertext can stand in for the other).
pub fn context(connection: &ConnectionId, customer: &CustomerId) -> [(&'static str, String); 3] {
    [
        ("purpose", "perch-records".to_owned()),
        ("connection_id", connection.as_str().to_owned()),
        ("customer_id", customer.as_str().to_owned()),
    ]
}

/// A data key as stored: KMS's ciphertext of it, and the key that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

impl std::fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedDataKey({} bytes, key {})", self.ciphertext.len(), self.key_id)
    }
}

/// Makes and unwraps connections' data keys (KMS in [`crate::aws::kms`]).
#[async_trait]
pub trait DataKeys: Send + Sync {
    /// A new data key for `connection`: the plaintext, for this process only, and the wrapped
    /// copy to store.
    async fn generate(
        &self,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<(DataKey, WrappedDataKey), Error>;

    /// The plaintext of a stored data key; fails if it was made for another connection or
    /// customer.
    async fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<DataKey, Error>;
}

/// Which record a ciphertext or hash belongs to: bound into both.
#[derive(Debug, Clone, Copy)]
pub struct RecordId<'a> {
    pub connection: &'a ConnectionId,
    pub entity: &'a str,
    /// `company`, `directory`, `individual`, `employment`.
    pub kind: &'a str,
    pub id: &'a str,
}

impl RecordId<'_> {
    /// An unambiguous encoding (each part length-prefixed: ids never need escaping).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        for part in [self.connection.as_str(), self.entity, self.kind, self.id] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// A keyed content hash (HMAC-SHA256).
pub type ContentHash = [u8; 32];

/// A connection's data key in memory: seals, opens and hashes its records.
pub struct DataKey {
    aead: LessSafeKey,
    mac_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

/// HKDF output lengths as `aws-lc-rs` asks for them.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(prk: &aws_lc_rs::hkdf::Prk, label: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[label], Len(32))
        .and_then(|okm| okm.fill(out.as_mut()))
        .map_err(|_| Error::internal("deriving a record key failed"))?;
    Ok(out)
}

impl DataKey {
    /// The keys derived from a data key's 32 bytes (the caller's copy is its own to zero).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != 32 {
            return Err(Error::internal(format!("a data key is 32 bytes, not {}", bytes.len())));
        }
        let prk = Salt::new(HKDF_SHA256, b"perch records v1").extract(bytes);
        let enc = derive(&prk, b"aes-256-gcm")?;
        let aead = UnboundKey::new(&AES_256_GCM, enc.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| Error::internal("AES-256-GCM refused the record key"))?;
        Ok(Self { aead, mac_key: derive(&prk, b"content hash")? })
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plaintext`, bound to `record`.
    pub fn seal(&self, record: RecordId<'_>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::internal(format!("OS randomness unavailable: {e}")))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let mut body = sealed.split_off(NONCE_LEN);
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(record.encode()), &mut body)
            .map_err(|_| Error::internal("sealing a record failed"))?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// The plaintext of a record sealed for `record`; fails for any other record, key or a
    /// changed byte.
    pub fn open(&self, record: RecordId<'_>, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let refused = || Error::internal("a stored record does not open under its connection's key");
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(refused());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self.aead.open_in_place(nonce, Aad::from(record.encode()), &mut body).map_err(|_| refused())?;
        let n = plain.len();
        body.truncate(n);
        Ok(body)
    }

    /// The keyed hash of a record's canonical content (bound to the record's identity too).
    pub fn content_hash(&self, record: RecordId<'_>, canonical: &[u8]) -> Result<ContentHash, Error> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(self.mac_key.as_ref())
            .map_err(|_| Error::internal("the content-hash key was refused"))?;
        m.update(&record.encode());
        m.update(canonical);
        Ok(m.finalize().into_bytes().into())
    }
}

/// Unwrapped data keys kept for a while, so a warm container serving the app's reads calls KMS
/// once per connection per `ttl`, not once per request (PERFORMANCE.md G3). Keyed by the
/// connection *and* its wrapped key: a key shredded and made anew is never served from here.
/// Bounded: past `capacity` the entry that expires first goes. The plaintext lives only in this
/// process's memory and is zeroed when its entry is dropped.
pub struct DataKeyCache {
    ttl: std::time::Duration,
    capacity: usize,
    entries: std::sync::Mutex<std::collections::HashMap<ConnectionId, CachedKey>>,
}

struct CachedKey {
    wrapped: Vec<u8>,
    key: std::sync::Arc<DataKey>,
    until: std::time::Instant,
}

impl DataKeyCache {
    pub fn new(ttl: std::time::Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), entries: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ConnectionId, CachedKey>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The plaintext of `wrapped`, from the cache or from `keys` (then kept).
    pub async fn get(
        &self,
        keys: &dyn DataKeys,
        wrapped: &WrappedDataKey,
        connection: &ConnectionId,
        customer: &CustomerId,
    ) -> Result<std::sync::Arc<DataKey>, Error> {
        let now = std::time::Instant::now();
        if let Some(c) = self.entries().get(connection).filter(|c| c.until > now && c.wrapped == wrapped.ciphertext) {
            return Ok(c.key.clone());
        }
        let key = std::sync::Arc::new(keys.unwrap(wrapped, connection, customer).await?);
        let mut entries = self.entries();
        entries.retain(|_, c| c.until > now);
        if entries.len() >= self.capacity
            && let Some(first) = entries.iter().min_by_key(|(_, c)| c.until).map(|(id, _)| id.clone())
        {
            entries.remove(&first);
        }
        let cached = CachedKey { wrapped: wrapped.ciphertext.clone(), key: key.clone(), until: now + self.ttl };
        entries.insert(connection.clone(), cached);
        Ok(key)
    }

    /// How many keys are held (tests).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn conn(id: &str) -> ConnectionId {
        ConnectionId::parse(id).unwrap()
    }

    const A: &str = "0b6f3c9e-8f6e-4a51-9d0a-2a3f5c7e9b10";
    const B: &str = "5d2c1e8a-3b4f-4c6d-8e9f-0a1b2c3d4e5f";

    #[test]
    fn a_sealed_record_opens_only_as_itself_under_its_own_key() {
        let (a, b) = (conn(A), conn(B));
        let k = key(7);
        let id = RecordId { connection: &a, entity: "e1", kind: "individual", id: "p1" };
        let sealed = k.seal(id, br#"{"first_name":"Ada"}"#).unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"Ada"), "no plaintext in the ciphertext");
        assert_eq!(k.open(id, &sealed).unwrap(), br#"{"first_name":"Ada"}"#);
        assert_ne!(k.seal(id, b"x").unwrap(), k.seal(id, b"x").unwrap(), "a fresh nonce each time");
        for other in [
            RecordId { connection: &b, ..id },
            RecordId { entity: "e2", ..id },
            RecordId { kind: "employment", ..id },
            RecordId { id: "p2", ..id },
        ] {
            assert!(k.open(other, &sealed).is_err(), "{other:?}");
        }
        assert!(key(8).open(id, &sealed).is_err(), "another connection's key");
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN + 2] ^= 1;
        assert!(k.open(id, &flipped).is_err(), "a changed byte");
        assert!(k.open(id, &sealed[..10]).is_err(), "a truncated ciphertext");
    }

    #[test]
    fn content_hashes_are_keyed_and_bound_to_the_record() {
        let a = conn(A);
        let id = RecordId { connection: &a, entity: "e1", kind: "individual", id: "p1" };
        let h = key(7).content_hash(id, b"same").unwrap();
        assert_eq!(h, key(7).content_hash(id, b"same").unwrap(), "stable for the same content");
        assert_ne!(h, key(7).content_hash(id, b"other").unwrap());
        assert_ne!(h, key(8).content_hash(id, b"same").unwrap(), "no oracle without the key");
        assert_ne!(h, key(7).content_hash(RecordId { id: "p2", ..id }, b"same").unwrap());
    }

    /// Counts unwraps; hands out the same bytes for every connection.
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl DataKeys for Counting {
        async fn generate(&self, _: &ConnectionId, _: &CustomerId) -> Result<(DataKey, WrappedDataKey), Error> {
            Err(Error::internal("not in this test"))
        }
        async fn unwrap(&self, _: &WrappedDataKey, _: &ConnectionId, _: &CustomerId) -> Result<DataKey, Error> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            DataKey::from_bytes(&[9; 32])
        }
    }

    #[tokio::test]
    async fn a_cached_key_is_unwrapped_once_per_ttl_and_never_for_another_wrapped_key() {
        let keys = Counting(std::sync::atomic::AtomicUsize::new(0));
        let customer = CustomerId::parse("acme").unwrap();
        let (a, b) = (conn(A), conn(B));
        let w1 = WrappedDataKey { ciphertext: vec![1], key_id: "k".into() };
        let w2 = WrappedDataKey { ciphertext: vec![2], key_id: "k".into() };
        let cache = DataKeyCache::new(std::time::Duration::from_secs(300), 1);
        let unwraps = || keys.0.load(std::sync::atomic::Ordering::Relaxed);
        cache.get(&keys, &w1, &a, &customer).await.unwrap();
        cache.get(&keys, &w1, &a, &customer).await.unwrap();
        assert_eq!(unwraps(), 1, "served from the cache");
        cache.get(&keys, &w2, &a, &customer).await.unwrap();
        assert_eq!(unwraps(), 2, "a new wrapped key (shredded, made anew) is unwrapped");
        cache.get(&keys, &w1, &b, &customer).await.unwrap();
        assert_eq!((unwraps(), cache.len()), (3, 1), "bounded: one entry");
        let expired = DataKeyCache::new(std::time::Duration::ZERO, 4);
        expired.get(&keys, &w1, &a, &customer).await.unwrap();
        expired.get(&keys, &w1, &a, &customer).await.unwrap();
        assert_eq!(unwraps(), 5, "past its ttl, unwrapped again");
    }

    #[test]
    fn a_data_key_is_thirty_two_bytes_and_never_printed() {
        assert!(DataKey::from_bytes(&[1; 16]).is_err());
        assert_eq!(format!("{:?}", key(1)), "DataKey([REDACTED])");
        let w = WrappedDataKey { ciphertext: vec![1, 2, 3], key_id: "k".into() };
        assert_eq!(format!("{w:?}"), "WrappedDataKey(3 bytes, key k)");
    }
}
