//! The etcd store backend against a real etcd (Debian's `etcd-server`,
//! installed by the test when missing; under `CI=true` a missing etcd is a
//! failure): the store's contract, and the real controller keeping its state
//! in etcd across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chimera_controller::store::etcd::{endpoints, EtcdStore};
use chimera_controller::store::{CmpOp, Compare, Op, Store, StoreError, Txn};
use chimera_e2e::*;
use std::time::Duration;

async fn store(etcd: &Etcd, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&endpoints(&etcd.url).unwrap(), prefix)
        .await
        .unwrap()
}

fn keys(kvs: &[chimera_controller::store::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn the_store_contract_holds_on_etcd() {
    let Some(etcd) = start_etcd() else { return };
    let s = store(&etcd, "/test-a/").await;

    // Revisions and compare-and-swap.
    let r1 = s
        .txn(Txn {
            success: vec![Op::put("a/1", "x")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r1.succeeded);
    let kv = s.get(b"a/1").await.unwrap().unwrap();
    assert_eq!(kv.key, b"a/1", "keys come back without the prefix");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1.revision, r1.revision, 1)
    );
    let cas = Txn {
        compare: vec![Compare::ModRevision(
            b"a/1".to_vec(),
            CmpOp::Equal,
            r1.revision,
        )],
        success: vec![Op::put("a/1", "y")],
        failure: vec![],
    };
    assert!(s.txn(cas.clone()).await.unwrap().succeeded);
    assert!(
        !s.txn(cas).await.unwrap().succeeded,
        "the stale writer loses"
    );
    let kv = s.get(b"a/1").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"y"[..], 2));
    let create = Txn {
        compare: vec![Compare::Version(b"a/2".to_vec(), CmpOp::Equal, 0)],
        success: vec![Op::put("a/2", "z")],
        failure: vec![],
    };
    assert!(s.txn(create.clone()).await.unwrap().succeeded);
    assert!(!s.txn(create).await.unwrap().succeeded);

    // Prefix ranges are ordered, bounded, and see only this store's prefix.
    s.txn(Txn {
        success: ["b/2", "a/9", "b/1", "ba/0"]
            .iter()
            .map(|k| Op::put(*k, "v"))
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(keys(&s.range(b"b/").await.unwrap().kvs), ["b/1", "b/2"]);
    let other = store(&etcd, "/test-b/").await;
    assert!(other.range(b"").await.unwrap().kvs.is_empty());

    // A batch past etcd's 128 operations per transaction still lands whole.
    let big: Vec<Op> = (0..300)
        .map(|i| Op::put(format!("t/{i:04}"), "v"))
        .collect();
    assert!(
        s.txn(Txn {
            success: big,
            ..Default::default()
        })
        .await
        .unwrap()
        .succeeded
    );
    assert_eq!(s.range(b"t/").await.unwrap().kvs.len(), 300);

    // An oversized value is refused and writes nothing.
    let err = s
        .txn(Txn {
            success: vec![Op::put("huge", vec![0u8; 1536 * 1024 + 1])],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(s.get(b"huge").await.unwrap().is_none());
}

#[tokio::test]
async fn leases_keep_and_take_their_keys_on_etcd() {
    let Some(etcd) = start_etcd() else { return };
    let s = store(&etcd, "/test-l/").await;
    let lease = s.lease_grant(Duration::from_secs(5)).await.unwrap();
    s.txn(Txn {
        success: vec![Op::Put {
            key: b"agents/x".to_vec(),
            value: b"1".to_vec(),
            lease,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    s.lease_keep_alive(lease).await.unwrap();
    assert_eq!(s.get(b"agents/x").await.unwrap().unwrap().lease, lease);
    s.lease_revoke(lease).await.unwrap();
    assert!(
        s.get(b"agents/x").await.unwrap().is_none(),
        "revoked: key gone"
    );
    assert!(matches!(
        s.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // A lease that runs out takes its key with it.
    let short = s.lease_grant(Duration::from_secs(1)).await.unwrap();
    s.txn(Txn {
        success: vec![Op::Put {
            key: b"agents/y".to_vec(),
            value: b"1".to_vec(),
            lease: short,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while s.get(b"agents/y").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "a 1 s lease still holds its key after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A put on a lease that does not exist is refused and writes nothing.
    let err = s
        .txn(Txn {
            success: vec![Op::Put {
                key: b"k".to_vec(),
                value: vec![],
                lease: 12345,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err}");
    assert!(s.get(b"k").await.unwrap().is_none());
}

#[test]
fn a_controller_on_etcd_keeps_its_sweeps_across_a_restart() {
    let Some(etcd) = start_etcd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [("CHIMERA_STORE", etcd.url.as_str())];
    let mut c = start_controller_env(&dir.path().join("data"), "127.0.0.1:0", "3s", &env);
    let addr = c.addr.clone();
    let _a = start_agent(&c.url, "agent-e");
    wait_for_agents(&c.url, 1);
    let spec = spec_file(
        dir.path(),
        "small.yaml",
        "name: on-etcd\nworkload: kernel\nparams:\n  op: matmul\n  shape: [\"1,64,64\", \"4,64,64\", \"16,64,64\"]\nrepeats: 2\n\
         harness: {warmup_iters: 1, min_iters: 3, min_time_ms: 20}\n",
    );
    let out = chimera(
        &c.url,
        &["sweep", "submit", spec.to_str().unwrap(), "--wait"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let before = chimera_json(&c.url, &["results", &id]);
    c.proc.kill();

    // A new controller with another (empty) data directory: the state is in etcd.
    let c = start_controller_env(&dir.path().join("elsewhere"), &addr, "3s", &env);
    // It leads once the killed one's etcd session has expired.
    wait_for(
        "the new controller to lead",
        Duration::from_secs(15),
        || {
            chimera(&c.url, &["sweep", "list"])
                .status
                .success()
                .then_some(())
        },
    );
    let after = chimera_json(&c.url, &["results", &id]);
    assert_eq!(after["trials"], before["trials"]);
    assert_eq!(after["trials"].as_array().unwrap().len(), 6);
    let status = chimera_json(&c.url, &["sweep", "status", &id]);
    assert_eq!(status[0]["state"], "done", "{status}");

    // A wrong store URL is refused by name before anything starts.
    let out = std::process::Command::new(bin("chimera-controller"))
        .args(["--listen", "127.0.0.1:0", "--store", "etcd://nohost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`nohost` is not HOST:PORT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
