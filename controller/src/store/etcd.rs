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
//!
//! TLS ([`EtcdTls`]: `--etcd-ca-file`, `--etcd-cert-file`, `--etcd-key-file`)
//! and user/password auth ([`EtcdAuth`]: `--etcd-user`,
//! `CHIMERA_ETCD_PASSWORD`) come in [`EtcdSettings`].

use super::{CmpOp, Compare, KeyValue, LeaseId, Op, Range, Store, StoreError, Txn, TxnResult};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::path::{Path, PathBuf};
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

/// Tries of an idempotent request (a read, a status) before its error is
/// returned. With a member down, the client's balancer may still send a
/// request to it; the next try goes to another member.
const READ_TRIES: u32 = 3;
/// How long one try of an idempotent request may take.
const READ_TRY: Duration = Duration::from_secs(3);

/// Whether a request failed on its way (a member gone, a connection
/// reset), not because etcd refused it: worth another try if idempotent.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        ),
        _ => false,
    }
}

/// First and longest pause between tries of an idempotent read.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(400);

/// Runs an idempotent request up to `tries` times while it fails
/// transiently, pausing a little longer each time.
async fn idempotent<T, F, Fut>(tries: u32, mut f: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut n = 1;
    let mut backoff = chimera_observe::retry::Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        // Each try bounded: one sent to a lost member may hang.
        let attempt = tokio::time::timeout(READ_TRY, f())
            .await
            .unwrap_or_else(|_| {
                Err(etcd_client::Error::IoError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {READ_TRY:?}"),
                )))
            });
        match attempt {
            Err(e) if n < tries && transient(&e) => {
                tokio::time::sleep(backoff.next_delay()).await;
                n += 1;
            }
            r => return r,
        }
    }
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

/// A campaign's error, typed where the caller acts on it: the client's
/// request timeout (tonic reports it as `Cancelled`) and a key the user may
/// not write are told apart from the rest.
fn campaign_error(e: etcd_client::Error) -> StoreError {
    match &e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Cancelled => {
            StoreError::Timeout(format!("etcd: {e}"))
        }
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => {
            StoreError::PermissionDenied(format!("etcd: {e}"))
        }
        // etcd's election service campaigns through an internal client and
        // returns that client's error as code Unknown: its text is the only
        // signal of a refused key there.
        etcd_client::Error::GRpcStatus(s) if s.message().contains("permission denied") => {
            StoreError::PermissionDenied(format!("etcd: {e}"))
        }
        _ => backend(e),
    }
}

/// How the controller reaches etcd beyond its endpoints. The default is
/// plain `http://` without authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdSettings {
    /// TLS to etcd; with it the endpoints are `https://`.
    pub tls: Option<EtcdTls>,
    /// An etcd user to authenticate as (etcd's `auth enable`).
    pub auth: Option<EtcdAuth>,
}

/// TLS to etcd: paths of PEM files, read when connecting (errors name the
/// flag and the path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificates etcd's server certificate must chain to
    /// (`--etcd-ca-file`); without it, the system's trusted roots.
    pub ca: Option<PathBuf>,
    /// Client certificate (`--etcd-cert-file`) for an etcd started with
    /// `--client-cert-auth`; it goes with `key`: both or neither.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (`--etcd-key-file`).
    pub key: Option<PathBuf>,
}

impl EtcdTls {
    /// TLS with these files, or `None` (plain http) when none is given.
    pub fn from_files(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Option<Self> {
        (ca.is_some() || cert.is_some() || key.is_some()).then_some(EtcdTls { ca, cert, key })
    }

    /// The client's TLS configuration, with the files read and checked.
    fn options(&self) -> Result<etcd_client::TlsOptions, String> {
        let mut tls = etcd_client::TlsOptions::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem(
                "--etcd-ca-file",
                ca,
                "CERTIFICATE",
            )?)),
            None => tls.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = read_pem("--etcd-cert-file", cert, "CERTIFICATE")?;
                let key = read_pem("--etcd-key-file", key, "PRIVATE KEY")?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err("--etcd-cert-file and --etcd-key-file go together: \
                            give both (a client certificate and its key) or neither"
                    .into())
            }
        }
        Ok(tls)
    }
}

/// Reads a PEM file given by `flag`; it must hold a `BEGIN ...{label}` block.
fn read_pem(flag: &str, path: &Path, label: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(label));
    if !has_block {
        return Err(format!(
            "{flag} {}: not a PEM file with a {label} (no `-----BEGIN ...{label}-----` line)",
            path.display()
        ));
    }
    Ok(bytes)
}

/// An etcd user and its password (`--etcd-user`, `CHIMERA_ETCD_PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// The etcd user name.
    pub user: String,
    /// Its password (never printed: `Debug` hides it).
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// An etcd client error with its sources, `: `-separated: tonic keeps the
/// reason (a refused certificate, say) in the sources, which
/// `etcd_client::Error` does not chain.
fn describe(e: &etcd_client::Error) -> String {
    let (mut s, mut source) = match e {
        etcd_client::Error::TransportError(t) => (String::new(), Some(t as &dyn std::error::Error)),
        etcd_client::Error::GRpcStatus(st) => (
            format!("{:?}: {}", st.code(), st.message()),
            std::error::Error::source(st),
        ),
        other => (other.to_string(), None),
    };
    while let Some(c) = source {
        let text = c.to_string();
        // Skip tonic's generic "transport error" and repeats.
        if text != "transport error" && !s.contains(&text) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&text);
        }
        source = c.source();
    }
    if s.is_empty() {
        e.to_string()
    } else {
        s
    }
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
    /// balances over them) and keeps every key under `prefix`. With
    /// `settings.tls` the `http://` endpoints (of [`endpoints`]) are
    /// contacted as `https://`, after the TLS files are read.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        settings: &EtcdSettings,
    ) -> Result<Self, StoreError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let endpoints: Vec<String> = match &settings.tls {
            Some(tls) => {
                options = options.with_tls(tls.options().map_err(StoreError::Backend)?);
                endpoints
                    .iter()
                    .map(|e| match e.strip_prefix("http://") {
                        Some(host_port) => format!("https://{host_port}"),
                        None => e.clone(),
                    })
                    .collect()
            }
            None => endpoints.to_vec(),
        };
        if let Some(auth) = &settings.auth {
            options = options.with_user(auth.user.clone(), auth.password.clone());
        }
        let joined = endpoints.join(",");
        let client = etcd_client::Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Backend(format!("etcd at {joined}: {}", describe(&e))))?;
        // Fail now, not at the first write, when no member answers. With a
        // member down the balancer may pick it: a few tries per endpoint
        // tell "one member down" from "nobody answers".
        let tries = READ_TRIES * endpoints.len().max(1) as u32;
        idempotent(tries, || {
            let mut c = client.clone();
            async move { c.status().await }
        })
        .await
        .map_err(|e| {
            StoreError::Backend(format!(
                "etcd at {joined} does not answer: {}",
                describe(&e)
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
            .map_err(campaign_error)?;
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
            let resp = idempotent(READ_TRIES, || {
                let (mut c, key) = (self.client.clone(), key.clone());
                async move { c.get(key, None).await }
            })
            .await
            .map_err(backend)?;
            Ok(resp.kvs().first().map(|kv| self.kv(kv)))
        }
        .boxed()
    }

    fn range(&self, prefix: &[u8]) -> BoxFuture<'_, Result<Range, StoreError>> {
        let prefix = self.full(prefix);
        async move {
            let resp = idempotent(READ_TRIES, || {
                let (mut c, prefix) = (self.client.clone(), prefix.clone());
                async move {
                    c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                        .await
                }
            })
            .await
            .map_err(backend)?;
            Ok(Range {
                kvs: resp.kvs().iter().map(|kv| self.kv(kv)).collect(),
                revision: resp.header().map_or(0, |h| h.revision()),
            })
        }
        .boxed()
    }

    fn range_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Range, StoreError>> {
        let full_prefix = self.full(prefix);
        let start = match after {
            Some(a) if a >= prefix => self.full(&super::key_after(a)),
            _ => full_prefix.clone(),
        };
        let end = super::prefix_end(&full_prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        async move {
            let resp = idempotent(READ_TRIES, || {
                let (mut c, start, end) = (self.client.clone(), start.clone(), end.clone());
                async move {
                    c.get(
                        start,
                        Some(
                            etcd_client::GetOptions::new()
                                .with_range(end)
                                .with_limit(limit),
                        ),
                    )
                    .await
                }
            })
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
    fn a_campaign_timeout_and_a_refused_key_are_typed() {
        // What tonic makes of its own request timeout (`TimeoutExpired`).
        let timeout = etcd_client::Error::GRpcStatus(tonic::Status::cancelled("Timeout expired"));
        assert!(matches!(campaign_error(timeout), StoreError::Timeout(_)));
        let denied = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied(
            "etcdserver: permission denied",
        ));
        assert!(matches!(
            campaign_error(denied),
            StoreError::PermissionDenied(_)
        ));
        let via_election =
            etcd_client::Error::GRpcStatus(tonic::Status::unknown("etcdserver: permission denied"));
        assert!(matches!(
            campaign_error(via_election),
            StoreError::PermissionDenied(_)
        ));
        let gone = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no member"));
        assert!(matches!(campaign_error(gone), StoreError::Backend(_)));
    }

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
    fn tls_files_are_checked_and_errors_name_the_flag_and_path() {
        assert_eq!(EtcdTls::from_files(None, None, None), None);
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("nope.pem");
        let err = |tls: EtcdTls| tls.options().err().unwrap_or_default();

        let e = err(EtcdTls::from_files(Some(missing.clone()), None, None).unwrap());
        assert!(
            e.starts_with(&format!("--etcd-ca-file {}: ", missing.display())),
            "{e}"
        );
        let e = err(EtcdTls::from_files(Some(pem.clone()), Some(pem.clone()), None).unwrap());
        assert!(
            e.contains("--etcd-cert-file") && e.contains("--etcd-key-file"),
            "{e}"
        );
        let e = err(EtcdTls::from_files(None, None, Some(pem.clone())).unwrap());
        assert!(
            e.contains("--etcd-cert-file") && e.contains("--etcd-key-file"),
            "{e}"
        );
        let e = err(
            EtcdTls::from_files(Some(pem.clone()), Some(pem.clone()), Some(pem.clone())).unwrap(),
        );
        assert!(
            e.starts_with(&format!(
                "--etcd-key-file {}: not a PEM file",
                pem.display()
            )),
            "a certificate is no key: {e}"
        );
        let text = dir.path().join("ca.txt");
        std::fs::write(&text, "hello").unwrap();
        let e = err(EtcdTls::from_files(Some(text.clone()), None, None).unwrap());
        assert!(
            e.starts_with(&format!(
                "--etcd-ca-file {}: not a PEM file",
                text.display()
            )),
            "{e}"
        );
        assert!(EtcdTls::from_files(Some(pem), None, None)
            .unwrap()
            .options()
            .is_ok());
        let auth = EtcdAuth {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
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
