//! The etcd backend: the same key space in an etcd cluster, optionally under
//! a prefix (`--store etcd://h1:2379,h2:2379 --store-prefix /lab-a`).
//!
//! Keys map one to one (`PREFIX` + key); revisions, versions and leases are
//! etcd's own. A transaction within etcd's limits (128 operations, 1.5 MiB
//! per request by default) is one etcd transaction. A larger batch (the
//! trials of a big sweep) is applied as several transactions in order, each
//! carrying the batch's compares: a crash between them leaves a prefix of the
//! batch written, which is why the scheduler writes a sweep's record after
//! its trials.

use super::{CmpOp, Compare, KeyValue, LeaseId, Op, Range, Store, StoreError, Txn, TxnResult};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::time::Duration;

/// Most operations in one etcd transaction (etcd's `--max-txn-ops` default).
pub const MAX_TXN_OPS: usize = 128;
/// Most bytes of keys and values in one transaction: under etcd's default
/// request limit of 1.5 MiB, with room for the request's framing.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// An etcd-backed [`Store`].
#[derive(Clone)]
pub struct EtcdStore {
    client: etcd_client::Client,
    prefix: Vec<u8>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// Endpoints of an `etcd://h1:2379,h2:2379` URL, as `http://` URLs.
pub fn endpoints(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("store `{url}` is not `etcd://HOST:PORT[,HOST:PORT...]`"))?;
    let eps: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("http://{}", s.trim_end_matches('/')))
        .collect();
    if eps.is_empty() {
        return Err(format!("store `{url}` names no etcd endpoint"));
    }
    for e in &eps {
        let host_port = e.trim_start_matches("http://");
        let port_ok = host_port
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "store `{url}`: endpoint `{host_port}` is not HOST:PORT"
            ));
        }
    }
    Ok(eps)
}

impl EtcdStore {
    /// Connects to the cluster (any reachable endpoint will do; the client
    /// balances over them) and keeps every key under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let mut client = etcd_client::Client::connect(endpoints, Some(options))
            .await
            .map_err(backend)?;
        // Fail now, not at the first write, when no member answers.
        client.status().await.map_err(|e| {
            StoreError::Backend(format!(
                "etcd at {} does not answer: {e}",
                endpoints.join(",")
            ))
        })?;
        Ok(EtcdStore {
            client,
            prefix: prefix.as_bytes().to_vec(),
        })
    }

    /// Campaigns for leadership of the election `name` (a key of this
    /// store) with `value` (the candidate's URL), on `lease`; returns when
    /// elected, with the leader key (a key of this store) that exists for as
    /// long as the leadership does.
    pub async fn campaign(
        &self,
        name: &[u8],
        value: &str,
        lease: LeaseId,
    ) -> Result<Vec<u8>, StoreError> {
        let resp = self
            .client
            .election_client()
            .campaign(self.full(name), value, lease)
            .await
            .map_err(backend)?;
        let key = resp.leader().map(|l| l.key().to_vec()).ok_or_else(|| {
            StoreError::Backend("etcd: campaign answered without a leader key".into())
        })?;
        Ok(key
            .strip_prefix(self.prefix.as_slice())
            .map(<[u8]>::to_vec)
            .unwrap_or(key))
    }

    /// The value (URL) of the current leader of election `name`, if any.
    pub async fn leader(&self, name: &[u8]) -> Result<Option<String>, StoreError> {
        match self.client.election_client().leader(self.full(name)).await {
            Ok(r) => Ok(r
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            Err(e) if e.to_string().contains("no leader") => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: kv
                .key()
                .strip_prefix(self.prefix.as_slice())
                .unwrap_or(kv.key())
                .to_vec(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        }
    }

    fn compare(&self, c: &Compare) -> etcd_client::Compare {
        use etcd_client::CompareOp as E;
        let op = |o: CmpOp| match o {
            CmpOp::Equal => E::Equal,
            CmpOp::NotEqual => E::NotEqual,
            CmpOp::Less => E::Less,
            CmpOp::Greater => E::Greater,
        };
        match c {
            Compare::Version(k, o, v) => etcd_client::Compare::version(self.full(k), op(*o), *v),
            Compare::ModRevision(k, o, v) => {
                etcd_client::Compare::mod_revision(self.full(k), op(*o), *v)
            }
            Compare::Value(k, o, v) => etcd_client::Compare::value(self.full(k), op(*o), v.clone()),
        }
    }

    fn op(&self, o: &Op) -> etcd_client::TxnOp {
        match o {
            Op::Put { key, value, lease } => {
                let opts = (*lease != 0).then(|| etcd_client::PutOptions::new().with_lease(*lease));
                etcd_client::TxnOp::put(self.full(key), value.clone(), opts)
            }
            Op::Delete { key } => etcd_client::TxnOp::delete(self.full(key), None),
        }
    }

    async fn one_txn(
        &self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResult, StoreError> {
        let txn = etcd_client::Txn::new()
            .when(compare.iter().map(|c| self.compare(c)).collect::<Vec<_>>())
            .and_then(success.iter().map(|o| self.op(o)).collect::<Vec<_>>())
            .or_else(failure.iter().map(|o| self.op(o)).collect::<Vec<_>>());
        let resp = self.client.clone().txn(txn).await.map_err(|e| match &e {
            etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
                let lease = success
                    .iter()
                    .chain(failure)
                    .find_map(|o| match o {
                        Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                        _ => None,
                    })
                    .unwrap_or(0);
                StoreError::LeaseNotFound(lease)
            }
            _ => backend(e),
        })?;
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
        })
    }
}

fn op_bytes(o: &Op) -> usize {
    match o {
        Op::Put { key, value, .. } => key.len() + value.len() + 16,
        Op::Delete { key } => key.len() + 8,
    }
}

/// The ops with only the last write of each key, in the order of those writes.
fn last_write_per_key(ops: Vec<Op>) -> Vec<Op> {
    let key = |o: &Op| match o {
        Op::Put { key, .. } | Op::Delete { key } => key.clone(),
    };
    let mut last: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    for (i, o) in ops.iter().enumerate() {
        last.insert(key(o), i);
    }
    ops.into_iter()
        .enumerate()
        .filter(|(i, o)| last.get(&key(o)) == Some(i))
        .map(|(_, o)| o)
        .collect()
}

/// Splits a batch into pieces within etcd's limits, in order.
fn chunks(ops: &[Op]) -> Vec<&[Op]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, o) in ops.iter().enumerate() {
        let b = op_bytes(o);
        if i > start && (i - start == MAX_TXN_OPS || bytes + b > MAX_TXN_BYTES) {
            out.push(&ops[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += b;
    }
    if start < ops.len() || ops.is_empty() {
        out.push(&ops[start..]);
    }
    out
}

impl Store for EtcdStore {
    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
        let key = self.full(key);
        async move {
            let resp = self.client.clone().get(key, None).await.map_err(backend)?;
            Ok(resp.kvs().first().map(|kv| self.kv(kv)))
        }
        .boxed()
    }

    fn range(&self, prefix: &[u8]) -> BoxFuture<'_, Result<Range, StoreError>> {
        let prefix = self.full(prefix);
        async move {
            let resp = self
                .client
                .clone()
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .map_err(backend)?;
            Ok(Range {
                kvs: resp.kvs().iter().map(|kv| self.kv(kv)).collect(),
                revision: resp.header().map_or(0, |h| h.revision()),
            })
        }
        .boxed()
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResult, StoreError>> {
        async move {
            for o in txn.success.iter().chain(&txn.failure) {
                if let Op::Put { key, value, .. } = o {
                    if value.len() > super::MAX_VALUE_BYTES {
                        return Err(StoreError::TooLarge {
                            key: String::from_utf8_lossy(key).into_owned(),
                            size: value.len(),
                            limit: super::MAX_VALUE_BYTES,
                        });
                    }
                }
            }
            // etcd refuses a key twice in one transaction; applied in order,
            // only each key's last write counts, so keep just that one.
            let txn = Txn {
                success: last_write_per_key(txn.success),
                failure: last_write_per_key(txn.failure),
                compare: txn.compare,
            };
            if txn.success.len() + txn.failure.len() <= MAX_TXN_OPS
                && txn
                    .success
                    .iter()
                    .chain(&txn.failure)
                    .map(op_bytes)
                    .sum::<usize>()
                    <= MAX_TXN_BYTES
            {
                return self.one_txn(&txn.compare, &txn.success, &txn.failure).await;
            }
            if !txn.failure.is_empty() {
                return Err(StoreError::Backend(format!(
                    "a transaction with a failure branch must fit one etcd transaction \
                     ({MAX_TXN_OPS} operations, {MAX_TXN_BYTES} bytes); this one has {} operations",
                    txn.success.len() + txn.failure.len()
                )));
            }
            // Several transactions, in order, each guarded by the compares.
            let mut last = TxnResult {
                succeeded: true,
                revision: 0,
            };
            for piece in chunks(&txn.success) {
                last = self.one_txn(&txn.compare, piece, &[]).await?;
                if !last.succeeded {
                    break;
                }
            }
            Ok(last)
        }
        .boxed()
    }

    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        async move {
            // etcd counts whole seconds, at least 1 (it may raise it to its minimum).
            let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
            let resp = self
                .client
                .clone()
                .lease_grant(secs, None)
                .await
                .map_err(backend)?;
            Ok(resp.id())
        }
        .boxed()
    }

    fn lease_keep_alive(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let lease_err = |e: etcd_client::Error| {
                if e.to_string().contains("not found") {
                    StoreError::LeaseNotFound(id)
                } else {
                    backend(e)
                }
            };
            let (mut keeper, mut stream) = self
                .client
                .clone()
                .lease_keep_alive(id)
                .await
                .map_err(lease_err)?;
            keeper.keep_alive().await.map_err(lease_err)?;
            match stream.message().await.map_err(lease_err)? {
                Some(r) if r.ttl() > 0 => Ok(()),
                _ => Err(StoreError::LeaseNotFound(id)),
            }
        }
        .boxed()
    }

    fn lease_revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match self.client.clone().lease_revoke(id).await {
                Ok(_) => Ok(()),
                Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("not found") => {
                    Err(StoreError::LeaseNotFound(id))
                }
                Err(e) => Err(backend(e)),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed_and_bad_ones_named() {
        assert_eq!(
            endpoints("etcd://h1:2379,10.0.0.2:2379").unwrap(),
            ["http://h1:2379", "http://10.0.0.2:2379"]
        );
        for (bad, needle) in [
            ("http://h1:2379", "is not `etcd://"),
            ("etcd://", "names no etcd endpoint"),
            ("etcd://h1", "`h1` is not HOST:PORT"),
            ("etcd://h1:port", "`h1:port` is not HOST:PORT"),
        ] {
            let e = endpoints(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn only_the_last_write_of_a_key_goes_to_etcd() {
        let ops = vec![
            Op::put("a", "1"),
            Op::put("b", "1"),
            Op::put("a", "2"),
            Op::Delete { key: b"b".to_vec() },
        ];
        assert_eq!(
            last_write_per_key(ops),
            [Op::put("a", "2"), Op::Delete { key: b"b".to_vec() }]
        );
    }

    #[test]
    fn big_batches_are_cut_within_etcds_limits_in_order() {
        let ops: Vec<Op> = (0..300)
            .map(|i| Op::put(format!("k{i}"), vec![0u8; 10]))
            .collect();
        let pieces = chunks(&ops);
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [128, 128, 44]
        );
        let big: Vec<Op> = (0..3)
            .map(|i| Op::put(format!("b{i}"), vec![0u8; 600 * 1024]))
            .collect();
        assert_eq!(chunks(&big).len(), 3, "one 600 KiB value per piece");
        assert_eq!(chunks(&[]).len(), 1);
    }
}
