//! The state store, shaped like etcd's model: a flat ordered key space with
//! revisions, compare-and-swap transactions, prefix ranges and leases.
//!
//! Architecture invariant: only `controller::store` touches a storage backend;
//! everything above it speaks [`Store`]. One backend today ([`embedded`], a redb
//! file in `--data-dir`); an etcd backend slots in behind the same trait.

pub mod embedded;
pub mod etcd;

use futures::future::BoxFuture;
use std::time::Duration;

/// A lease id; 0 means "no lease".
pub type LeaseId = i64;

/// A stored key and its value with etcd's bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key.
    pub create_revision: i64,
    /// Revision of the transaction that last wrote it.
    pub mod_revision: i64,
    /// Writes since creation (1 after the first put).
    pub version: i64,
    /// Lease the key is attached to (0 for none).
    pub lease: LeaseId,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl CmpOp {
    fn holds<T: Ord>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Equal => a == b,
            CmpOp::NotEqual => a != b,
            CmpOp::Less => a < b,
            CmpOp::Greater => a > b,
        }
    }
}

/// A condition of a transaction; a missing key has version, revisions 0 and an empty value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Compare the key's version (0 when absent).
    Version(Vec<u8>, CmpOp, i64),
    /// Compare the key's last-modified revision (0 when absent).
    ModRevision(Vec<u8>, CmpOp, i64),
    /// Compare the key's value.
    Value(Vec<u8>, CmpOp, Vec<u8>),
}

/// A write in a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set a key, attached to a lease (0 for none).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
    },
    /// Remove a key.
    Delete { key: Vec<u8> },
}

impl Op {
    /// A put without a lease.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }
}

/// If every compare holds, apply `success`, else `failure`; atomically, as one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the compares held (and `success` was applied).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
}

/// Keys under a prefix, at one revision.
#[derive(Clone, Debug, Default)]
pub struct Range {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not read or write (disk, corruption, connection).
    #[error("store backend: {0}")]
    Backend(String),
    /// A lease that does not exist or has expired.
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    /// The backend's request timeout ended the call: no answer, nothing
    /// refused (only an etcd campaign reports it; it is retried as is).
    #[error("store backend: {0}")]
    Timeout(String),
    /// The backend refused the key to this client's user (only an etcd
    /// campaign reports it; retrying cannot help).
    #[error("store backend: {0}")]
    PermissionDenied(String),
    /// A value over the store's size limit.
    #[error("value of {size} bytes for key `{key}` exceeds the limit of {limit} bytes")]
    TooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
}

/// Largest value accepted (etcd's default request limit is 1.5 MiB).
pub const MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The store interface every backend implements.
pub trait Store: Send + Sync + 'static {
    /// One key.
    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>>;
    /// Every key starting with `prefix`, in key order.
    fn range(&self, prefix: &[u8]) -> BoxFuture<'_, Result<Range, StoreError>>;
    /// At most `limit` keys starting with `prefix` and sorting after
    /// `after` (from the first when `None`), in key order: a page.
    fn range_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Range, StoreError>>;
    /// An atomic compare-and-swap transaction.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResult, StoreError>>;
    /// A lease that expires `ttl` after its last keep-alive; its keys go with it.
    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>>;
    /// Renews a lease.
    fn lease_keep_alive(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Ends a lease now, deleting its keys.
    fn lease_revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The first key after every key that starts with `prefix` (etcd's
/// `range_end` of a prefix); empty when there is none (all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// The first key sorting after `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// A store whose every transaction also requires `guard` (a leader's
/// fencing condition: its election key still exists). A write after the
/// leadership is lost fails its compare and changes nothing.
pub struct Guarded {
    pub inner: std::sync::Arc<dyn Store>,
    pub guard: Compare,
}

impl Store for Guarded {
    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
        self.inner.get(key)
    }
    fn range(&self, prefix: &[u8]) -> BoxFuture<'_, Result<Range, StoreError>> {
        self.inner.range(prefix)
    }
    fn range_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Range, StoreError>> {
        self.inner.range_page(prefix, after, limit)
    }
    fn txn(&self, mut txn: Txn) -> BoxFuture<'_, Result<TxnResult, StoreError>> {
        txn.compare.push(self.guard.clone());
        self.inner.txn(txn)
    }
    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        self.inner.lease_grant(ttl)
    }
    fn lease_keep_alive(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.lease_keep_alive(id)
    }
    fn lease_revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.lease_revoke(id)
    }
}

#[cfg(test)]
mod tests;
