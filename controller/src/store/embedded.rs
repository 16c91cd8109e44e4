//! The embedded backend: one redb file, ACID, fsync on every commit.
//!
//! Values are stored with a fixed header carrying etcd's bookkeeping
//! (create revision, mod revision, version, lease). Leases live in memory: a
//! restart ends every lease and deletes the keys attached to them (agents
//! re-register when they reconnect), which is the one difference from etcd.

use super::{
    CmpOp, Compare, KeyValue, LeaseId, Op, Range, Store, StoreError, Txn, TxnResult,
    MAX_VALUE_BYTES,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const HEADER: usize = 32;

/// A key put under a lease by a transaction.
type Attached = (LeaseId, Vec<u8>);

/// The file name inside the data directory.
pub const FILE_NAME: &str = "chimera.redb";

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<Vec<u8>>,
}

struct Inner {
    db: Database,
    leases: Mutex<HashMap<LeaseId, Lease>>,
    next_lease: Mutex<LeaseId>,
}

/// A redb-backed [`Store`].
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + kv.value.len());
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&kv.value);
    out
}

fn decode(key: &[u8], raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < HEADER {
        return Err(StoreError::Backend(format!(
            "corrupt record for key `{}`: {} bytes",
            String::from_utf8_lossy(key),
            raw.len()
        )));
    }
    let n = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[i * 8..i * 8 + 8]);
        i64::from_le_bytes(b)
    };
    Ok(KeyValue {
        key: key.to_vec(),
        value: raw[HEADER..].to_vec(),
        create_revision: n(0),
        mod_revision: n(1),
        version: n(2),
        lease: n(3),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. Keys attached to leases of a
    /// previous run are deleted: those leases ended with that run.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;
        let store = EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                leases: Mutex::new(HashMap::new()),
                next_lease: Mutex::new(1),
            }),
        };
        store.drop_leased_keys()?;
        Ok(store)
    }

    fn drop_leased_keys(&self) -> Result<(), StoreError> {
        let wtx = self.inner.db.begin_write().map_err(backend)?;
        {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            wtx.open_table(META).map_err(backend)?;
            let mut doomed = Vec::new();
            for item in kv.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let rec = decode(k.value(), v.value())?;
                if rec.lease != 0 {
                    doomed.push(rec.key);
                }
            }
            for k in doomed {
                kv.remove(k.as_slice()).map_err(backend)?;
            }
        }
        wtx.commit().map_err(backend)
    }

    fn get_blocking(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(backend)?;
        let kv = match rtx.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        kv.get(key)
            .map_err(backend)?
            .map(|v| decode(key, v.value()))
            .transpose()
    }

    fn range_blocking(&self, prefix: &[u8]) -> Result<Range, StoreError> {
        self.range_page_blocking(prefix, None, usize::MAX)
    }

    fn range_page_blocking(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Range, StoreError> {
        let rtx = self.inner.db.begin_read().map_err(backend)?;
        let revision = match rtx.open_table(META) {
            Ok(t) => t
                .get(REVISION)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(backend(e)),
        };
        let kv = match rtx.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Ok(Range {
                    kvs: vec![],
                    revision,
                })
            }
            Err(e) => return Err(backend(e)),
        };
        let mut kvs = Vec::new();
        let start = match after {
            Some(a) if a >= prefix => super::key_after(a),
            _ => prefix.to_vec(),
        };
        for item in kv.range(start.as_slice()..).map_err(backend)? {
            if kvs.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(backend)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            kvs.push(decode(k.value(), v.value())?);
        }
        Ok(Range { kvs, revision })
    }

    /// Applies the transaction; also returns the keys it attached to leases.
    fn txn_blocking(&self, txn: Txn) -> Result<(TxnResult, Vec<Attached>), StoreError> {
        for op in txn.success.iter().chain(&txn.failure) {
            if let Op::Put { key, value, .. } = op {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(StoreError::TooLarge {
                        key: String::from_utf8_lossy(key).into_owned(),
                        size: value.len(),
                        limit: MAX_VALUE_BYTES,
                    });
                }
            }
        }
        let wtx = self.inner.db.begin_write().map_err(backend)?;
        let result;
        let mut attached = Vec::new();
        {
            let mut kv = wtx.open_table(KV).map_err(backend)?;
            let mut meta = wtx.open_table(META).map_err(backend)?;
            let current = meta
                .get(REVISION)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut holds = true;
            for c in &txn.compare {
                let key = match c {
                    Compare::Version(k, ..)
                    | Compare::ModRevision(k, ..)
                    | Compare::Value(k, ..) => k,
                };
                let rec = kv
                    .get(key.as_slice())
                    .map_err(backend)?
                    .map(|v| decode(key, v.value()))
                    .transpose()?;
                holds &= match c {
                    Compare::Version(_, op, v) => {
                        op.holds(rec.as_ref().map_or(0, |r| r.version), *v)
                    }
                    Compare::ModRevision(_, op, v) => {
                        op.holds(rec.as_ref().map_or(0, |r| r.mod_revision), *v)
                    }
                    Compare::Value(_, op, v) => {
                        op.holds(rec.as_ref().map_or(&[][..], |r| &r.value[..]), &v[..])
                    }
                };
            }
            let ops = if holds { &txn.success } else { &txn.failure };
            let revision = if ops.is_empty() { current } else { current + 1 };
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        if *lease != 0 {
                            let leases = self.inner.leases.lock().map_err(backend)?;
                            if !leases.contains_key(lease) {
                                return Err(StoreError::LeaseNotFound(*lease));
                            }
                            attached.push((*lease, key.clone()));
                        }
                        let prev = kv
                            .get(key.as_slice())
                            .map_err(backend)?
                            .map(|v| decode(key, v.value()))
                            .transpose()?;
                        let rec = KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                            mod_revision: revision,
                            version: prev.as_ref().map_or(0, |p| p.version) + 1,
                            lease: *lease,
                        };
                        kv.insert(key.as_slice(), encode(&rec).as_slice())
                            .map_err(backend)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key.as_slice()).map_err(backend)?;
                    }
                }
            }
            if revision != current {
                meta.insert(REVISION, revision).map_err(backend)?;
            }
            result = TxnResult {
                succeeded: holds,
                revision,
            };
        }
        wtx.commit().map_err(backend)?;
        Ok((result, attached))
    }

    /// Deletes the keys of every lease whose deadline has passed; returns how many leases ended.
    pub async fn expire_leases(&self) -> Result<usize, StoreError> {
        let expired: Vec<LeaseId> = {
            let leases = self.inner.leases.lock().map_err(backend)?;
            let now = Instant::now();
            leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in &expired {
            self.lease_revoke(*id).await?;
        }
        Ok(expired.len())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError::Backend(format!("store task: {e}")))?
    }
}

impl Store for EmbeddedStore {
    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
        let key = key.to_vec();
        self.blocking(move |s| s.get_blocking(&key)).boxed()
    }

    fn range(&self, prefix: &[u8]) -> BoxFuture<'_, Result<Range, StoreError>> {
        let prefix = prefix.to_vec();
        self.blocking(move |s| s.range_blocking(&prefix)).boxed()
    }

    fn range_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Range, StoreError>> {
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.blocking(move |s| s.range_page_blocking(&prefix, after.as_deref(), limit))
            .boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResult, StoreError>> {
        async move {
            let (result, attached) = self.blocking(move |s| s.txn_blocking(txn)).await?;
            if !attached.is_empty() {
                let mut leases = self.inner.leases.lock().map_err(backend)?;
                for (id, key) in attached {
                    if let Some(l) = leases.get_mut(&id) {
                        l.keys.insert(key);
                    }
                }
            }
            Ok(result)
        }
        .boxed()
    }

    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        async move {
            let id = {
                let mut next = self.inner.next_lease.lock().map_err(backend)?;
                let id = *next;
                *next += 1;
                id
            };
            self.inner.leases.lock().map_err(backend)?.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: HashSet::new(),
                },
            );
            Ok(id)
        }
        .boxed()
    }

    fn lease_keep_alive(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let mut leases = self.inner.leases.lock().map_err(backend)?;
            let now = Instant::now();
            match leases.get_mut(&id) {
                Some(l) if l.deadline > now => {
                    l.deadline = now + l.ttl;
                    Ok(())
                }
                _ => Err(StoreError::LeaseNotFound(id)),
            }
        }
        .boxed()
    }

    fn lease_revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let lease = self.inner.leases.lock().map_err(backend)?.remove(&id);
            let Some(lease) = lease else {
                return Err(StoreError::LeaseNotFound(id));
            };
            if lease.keys.is_empty() {
                return Ok(());
            }
            // Only delete keys still attached to this lease (a later put may have moved them).
            let mut txn = Txn::default();
            for key in lease.keys {
                if let Some(kv) = self.get(&key).await? {
                    if kv.lease == id {
                        txn.compare.push(Compare::ModRevision(
                            key.clone(),
                            CmpOp::Equal,
                            kv.mod_revision,
                        ));
                        txn.success.push(Op::Delete { key });
                    }
                }
            }
            if !txn.success.is_empty() {
                self.txn(txn).await?;
            }
            Ok(())
        }
        .boxed()
    }
}
