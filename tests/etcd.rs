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
    EtcdStore::connect(&endpoints(&etcd.url).unwrap(), prefix, &Default::default())
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
    // Pages: bounded, in order, after the key given, within the prefix.
    let page = s.range_page(b"t/", None, 100).await.unwrap().kvs;
    assert_eq!(page.len(), 100);
    let next = s
        .range_page(b"t/", Some(&page[99].key), 250)
        .await
        .unwrap()
        .kvs;
    assert_eq!(keys(&next[..1]), ["t/0100"]);
    assert_eq!(next.len(), 200);
    assert_eq!(
        keys(&s.range_page(b"b/", Some(b"b/1"), 10).await.unwrap().kvs),
        ["b/2"]
    );

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

/// PEM files of a test PKI: a CA, etcd's server certificate (for
/// 127.0.0.1 and localhost) and a client certificate, all signed by the CA.
struct Pki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

fn make_pki(dir: &std::path::Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "chimera test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "etcd",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(vec![], "chimera", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", ca_pem),
        server_cert: write("server.pem", server_cert),
        server_key: write("server-key.pem", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client-key.pem", client_key),
    }
}

#[test]
fn etcd_over_tls_with_client_certificates() {
    use chimera_controller::store::etcd::{EtcdSettings, EtcdTls};
    let Some(binary) = etcd_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new(binary)
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
        .arg("--cert-file")
        .arg(&pki.server_cert)
        .arg("--key-file")
        .arg(&pki.server_key)
        .arg("--trusted-ca-file")
        .arg(&pki.ca)
        .arg("--client-cert-auth")
        .args(["--log-level", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    let _etcd = Proc::new(child, "etcd (TLS)");
    let url = format!("etcd://127.0.0.1:{client}");
    let eps = endpoints(&url).unwrap();
    let tls = |cert: bool| EtcdSettings {
        tls: EtcdTls::from_files(
            Some(pki.ca.clone()),
            cert.then(|| pki.client_cert.clone()),
            cert.then(|| pki.client_key.clone()),
        ),
        auth: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();

    // (a) The store over TLS, once etcd is up.
    let s = rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(&eps, "/tls/", &tls(true)).await {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("waiting for etcd over TLS: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => panic!("etcd over TLS never answered: {e}"),
            }
        }
    });
    rt.block_on(async {
        let r = s
            .txn(Txn {
                success: vec![Op::put("k", "over tls")],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.succeeded);
        let kv = s.get(b"k").await.unwrap().unwrap();
        assert_eq!(kv.value, b"over tls");
        assert_eq!(kv.mod_revision, r.revision);
    });

    // (b) Without the client certificate, with the system's roots instead
    // of the CA, or in plain http, etcd cannot be used.
    rt.block_on(async {
        let no_cert = EtcdStore::connect(&eps, "/tls/", &tls(false)).await;
        let e = no_cert
            .err()
            .expect("etcd let a client without a certificate in");
        eprintln!("without a client certificate: {e}");
        let system_roots = EtcdSettings {
            tls: EtcdTls::from_files(
                None,
                Some(pki.client_cert.clone()),
                Some(pki.client_key.clone()),
            ),
            auth: None,
        };
        let e = EtcdStore::connect(&eps, "/tls/", &system_roots)
            .await
            .err()
            .expect("a certificate from the test CA passed the system's roots");
        eprintln!("with the system's roots: {e}");
        let plain = EtcdStore::connect(&eps, "/tls/", &EtcdSettings::default()).await;
        assert!(plain.is_err(), "plain http to a TLS etcd worked");
    });

    // (c) The real controller, configured through the environment, leads and
    // serves with its state in the TLS etcd.
    let env = [
        ("CHIMERA_STORE", url.as_str()),
        ("CHIMERA_ETCD_CA_FILE", pki.ca.to_str().unwrap()),
        ("CHIMERA_ETCD_CERT_FILE", pki.client_cert.to_str().unwrap()),
        ("CHIMERA_ETCD_KEY_FILE", pki.client_key.to_str().unwrap()),
    ];
    let c = start_controller_env(&dir.path().join("data"), "127.0.0.1:0", "3s", &env);
    wait_for(
        "the controller on TLS etcd to lead",
        Duration::from_secs(20),
        || {
            chimera(&c.url, &["sweep", "list"])
                .status
                .success()
                .then_some(())
        },
    );
    let _a = start_agent(&c.url, "agent-tls");
    wait_for_agents(&c.url, 1);
    let record = rt.block_on(async {
        EtcdStore::connect(&eps, "", &tls(true))
            .await
            .unwrap()
            .get(b"/chimera/v1/agents/agent-tls")
            .await
            .unwrap()
    });
    assert!(record.is_some(), "the agent's record is in the TLS etcd");

    // (d) Bad TLS settings are refused, naming the flag (and the path).
    let controller = |args: &[&str]| {
        let out = std::process::Command::new(bin("chimera-controller"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("other"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = dir.path().join("nowhere/ca.pem");
    let missing = missing.to_str().unwrap();
    let (cert, key) = (
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let err = controller(&[
        "--store",
        &url,
        "--etcd-ca-file",
        missing,
        "--etcd-cert-file",
        cert,
        "--etcd-key-file",
        key,
    ]);
    assert!(
        err.contains(&format!("--etcd-ca-file {missing}: No such file")),
        "{err}"
    );
    let err = controller(&["--store", &url, "--etcd-cert-file", cert]);
    assert!(
        err.contains("--etcd-cert-file") && err.contains("--etcd-key-file"),
        "{err}"
    );
    let err = controller(&["--store", "embedded", "--etcd-key-file", key]);
    assert!(
        err.contains("--etcd-key-file is for an etcd store"),
        "{err}"
    );
}

#[test]
fn etcd_with_a_user_and_password() {
    use chimera_controller::store::etcd::{EtcdAuth, EtcdSettings};
    let Some(etcd) = start_etcd() else { return };
    let eps = endpoints(&etcd.url).unwrap();
    let as_root = |password: &str| EtcdSettings {
        tls: None,
        auth: Some(EtcdAuth {
            user: "root".into(),
            password: password.into(),
        }),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut admin = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
            .await
            .unwrap();
        let _ = admin.role_add("root").await; // built in on some versions
        admin.user_add("root", "s3cret-pw", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        // Chimera's least-privilege user (docs/operations.md): readwrite on
        // /chimera/ and nothing else.
        admin.role_add("chimera").await.unwrap();
        admin
            .role_grant_permission(
                "chimera",
                etcd_client::Permission::read_write("/chimera/").with_prefix(),
            )
            .await
            .unwrap();
        admin.user_add("chimera", "chimera-pw", None).await.unwrap();
        admin.user_grant_role("chimera", "chimera").await.unwrap();
        admin.auth_enable().await.unwrap();

        let s = EtcdStore::connect(&eps, "/auth/", &as_root("s3cret-pw"))
            .await
            .unwrap();
        let r = s
            .txn(Txn {
                success: vec![Op::put("k", "v")],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.succeeded);
        assert_eq!(s.get(b"k").await.unwrap().unwrap().value, b"v");

        let e = EtcdStore::connect(&eps, "/auth/", &as_root("wrong-pw"))
            .await
            .err()
            .expect("a wrong password was accepted");
        assert!(e.to_string().contains("authentication failed"), "{e}");
        // Without a user: refused at connect, or at the first read.
        if let Ok(anon) = EtcdStore::connect(&eps, "/auth/", &EtcdSettings::default()).await {
            assert!(anon.get(b"k").await.is_err(), "an anonymous read worked");
        }
    });

    // The real controller, its user from the environment, leads and serves.
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CHIMERA_STORE", etcd.url.as_str()),
        ("CHIMERA_ETCD_USER", "root"),
        ("CHIMERA_ETCD_PASSWORD", "s3cret-pw"),
    ];
    let c = start_controller_env(&dir.path().join("data"), "127.0.0.1:0", "3s", &env);
    wait_for(
        "the controller on etcd with auth to lead",
        Duration::from_secs(20),
        || {
            chimera(&c.url, &["sweep", "list"])
                .status
                .success()
                .then_some(())
        },
    );

    // A user without its password, or a password with the embedded store,
    // is refused by name.
    let controller = |args: &[&str], password: Option<&str>| {
        let mut cmd = std::process::Command::new(bin("chimera-controller"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("other"))
            .args(args)
            .env_remove("CHIMERA_ETCD_PASSWORD");
        if let Some(p) = password {
            cmd.env("CHIMERA_ETCD_PASSWORD", p);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = controller(&["--store", &etcd.url, "--etcd-user", "root"], None);
    assert!(
        err.contains("--etcd-user needs") && err.contains("CHIMERA_ETCD_PASSWORD"),
        "{err}"
    );
    let err = controller(
        &["--store", &etcd.url, "--etcd-user", "root"],
        Some("wrong-pw"),
    );
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong-pw"), "the password is printed: {err}");
    let err = controller(&["--store", "embedded"], Some("s3cret-pw"));
    assert!(
        err.contains("CHIMERA_ETCD_PASSWORD is for an etcd store"),
        "{err}"
    );

    // The least-privilege user leads and serves under /chimera/ ...
    drop(c);
    let env = [
        ("CHIMERA_STORE", etcd.url.as_str()),
        ("CHIMERA_ETCD_USER", "chimera"),
        ("CHIMERA_ETCD_PASSWORD", "chimera-pw"),
    ];
    let c = start_controller_env(&dir.path().join("least"), "127.0.0.1:0", "3s", &env);
    wait_for(
        "the controller as etcd user chimera to lead",
        Duration::from_secs(20),
        || {
            chimera(&c.url, &["sweep", "list"])
                .status
                .success()
                .then_some(())
        },
    );
    drop(c);
    // ... and under a prefix it has no grant for, it stops, saying what to grant.
    let err = controller(
        &[
            "--store",
            &etcd.url,
            "--etcd-user",
            "chimera",
            "--store-prefix",
            "/lab-a",
        ],
        Some("chimera-pw"),
    );
    assert!(
        err.contains("etcd refused the election key /lab-a/chimera/v1/leader: permission denied for etcd user chimera")
            && err.contains("--prefix=true /lab-a/chimera/"),
        "{err}"
    );
}
