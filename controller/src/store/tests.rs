use super::embedded::EmbeddedStore;
use super::*;

fn open() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn revisions_and_compare_and_swap() {
    let (_dir, s) = open();
    let r1 = s
        .txn(Txn {
            success: vec![Op::put("a/1", "x")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r1.succeeded);
    assert_eq!(r1.revision, 1);
    let kv = s.get(b"a/1").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 1, 1));

    // CAS on the mod revision: the stale writer loses.
    let ok = Txn {
        compare: vec![Compare::ModRevision(b"a/1".to_vec(), CmpOp::Equal, 1)],
        success: vec![Op::put("a/1", "y")],
        failure: vec![],
    };
    assert!(s.txn(ok.clone()).await.unwrap().succeeded);
    let lost = s.txn(ok).await.unwrap();
    assert!(!lost.succeeded);
    let kv = s.get(b"a/1").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision),
        (&b"y"[..], 2, 2)
    );

    // Create-if-absent via version == 0.
    let create = Txn {
        compare: vec![Compare::Version(b"a/2".to_vec(), CmpOp::Equal, 0)],
        success: vec![Op::put("a/2", "z")],
        failure: vec![],
    };
    assert!(s.txn(create.clone()).await.unwrap().succeeded);
    assert!(!s.txn(create).await.unwrap().succeeded);
}

#[tokio::test]
async fn prefix_range_is_ordered_and_bounded() {
    let (_dir, s) = open();
    let ops = ["b/2", "a/9", "b/1", "ba/0", "c"]
        .iter()
        .map(|k| Op::put(*k, "v"))
        .collect();
    s.txn(Txn {
        success: ops,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = s.range(b"b/").await.unwrap();
    let keys: Vec<_> = r
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    assert_eq!(keys, vec!["b/1", "b/2"]);
    assert_eq!(r.revision, 1, "one transaction is one revision");
}

#[tokio::test]
async fn survives_reopen_and_drops_leased_keys() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let lease = s.lease_grant(Duration::from_secs(60)).await.unwrap();
        s.txn(Txn {
            success: vec![
                Op::put("keep", "1"),
                Op::Put {
                    key: b"leased".to_vec(),
                    value: b"1".to_vec(),
                    lease,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert!(s.get(b"keep").await.unwrap().is_some());
    assert!(s.get(b"leased").await.unwrap().is_none());
}

#[tokio::test]
async fn expired_lease_takes_its_keys() {
    let (_dir, s) = open();
    let lease = s.lease_grant(Duration::from_millis(1)).await.unwrap();
    s.txn(Txn {
        success: vec![Op::Put {
            key: b"agent/x".to_vec(),
            value: b"1".to_vec(),
            lease,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(matches!(
        s.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert_eq!(s.expire_leases().await.unwrap(), 1);
    assert!(s.get(b"agent/x").await.unwrap().is_none());
    // A put on an unknown lease is refused and changes nothing.
    let err = s
        .txn(Txn {
            success: vec![Op::Put {
                key: b"k".to_vec(),
                value: vec![],
                lease: 99,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(99)));
    assert!(s.get(b"k").await.unwrap().is_none());
}

#[tokio::test]
async fn oversized_value_is_refused() {
    let (_dir, s) = open();
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let err = s
        .txn(Txn {
            success: vec![Op::put("big", big)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("big"), "{err}");
}

#[tokio::test]
async fn pages_of_a_prefix_are_bounded_and_ordered() {
    let (_dir, s) = open();
    s.txn(Txn {
        success: (0..25)
            .map(|i| Op::put(format!("p/{i:03}"), "v"))
            .chain([Op::put("p0", "x"), Op::put("o/1", "y")])
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = s.range_page(b"p/", None, 10).await.unwrap().kvs;
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].key, b"p/000");
    let rest = s
        .range_page(b"p/", Some(&first[9].key), 100)
        .await
        .unwrap()
        .kvs;
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].key, b"p/010");
    assert_eq!(rest[14].key, b"p/024");
    // A token before the prefix starts at the prefix; after it, nothing.
    assert_eq!(
        s.range_page(b"p/", Some(b"a"), 1).await.unwrap().kvs[0].key,
        b"p/000"
    );
    assert!(s
        .range_page(b"p/", Some(b"q"), 5)
        .await
        .unwrap()
        .kvs
        .is_empty());
    assert_eq!(prefix_end(b"p/"), b"p0");
    assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
}
