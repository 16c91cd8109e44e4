//! TLS for the controller's gRPC port, and a small fleet's PKI: a CA and the
//! certificates `chimera tls init` / `chimera tls issue` make (rcgen).
//!
//! Every certificate names its holder with an identity URI SAN
//! (`chimera_domain::identity`): `spiffe://chimera/agent/NAME`,
//! `spiffe://chimera/operator/ROLE/NAME`, `spiffe://chimera/controller/NAME`;
//! the common name is the name too. A controller certificate also carries
//! the DNS names and IP addresses clients reach it by.

use anyhow::{bail, Context};
use chimera_domain::identity::{Identity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The controller's TLS files (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// Its certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs agents' and operators' client certificates (PEM);
    /// with it, agents must present a certificate naming them.
    pub client_ca: Option<PathBuf>,
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {what} {}", path.display()))
}

impl ServerTls {
    /// tonic's server TLS settings from the files. Client certificates are
    /// optional at the handshake (operators may use tokens instead); the
    /// auth layer requires them where they are needed.
    pub fn server_config(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let cert = read("--tls-cert", &self.cert)?;
        let key = read("--tls-key", &self.key)?;
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config
                .client_ca_root(tonic::transport::Certificate::from_pem(read(
                    "--tls-client-ca",
                    ca,
                )?))
                .client_auth_optional(true);
        }
        Ok(config)
    }
}

/// Paths of the CA in a PKI directory.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca-key.pem"))
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory and a rename, with `mode` (keys: 0600) from creation on.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("write {}", path.display()))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Makes a CA in `dir` (`ca.pem`, and `ca-key.pem` with mode 0600), valid
/// for `days`. Refuses to replace an existing CA (every certificate it
/// signed would stop working) unless `force`.
pub fn init_ca(dir: &Path, days: u32, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let (cert_path, key_path) = ca_paths(dir);
    if !force && (cert_path.exists() || key_path.exists()) {
        bail!(
            "{} already holds a CA; every certificate it issued depends on it. \
             Pass --force to replace it (and re-issue every certificate)",
            dir.display()
        );
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "Chimera fleet CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "chimera");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let key = KeyPair::generate().context("generate the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("sign the CA certificate")?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// What a certificate is for.
#[derive(Clone, Debug)]
pub enum Subject {
    /// A controller's server certificate, for these DNS names and IP addresses.
    Controller { name: String, hosts: Vec<String> },
    /// An agent's client certificate.
    Agent { name: String },
    /// An operator's client certificate with a role.
    Operator { name: String, role: Role },
}

impl Subject {
    fn identity(&self) -> Identity {
        match self {
            Subject::Controller { name, .. } => Identity::Controller(name.clone()),
            Subject::Agent { name } => Identity::Agent(name.clone()),
            Subject::Operator { name, role } => Identity::Operator {
                name: name.clone(),
                role: *role,
            },
        }
    }

    /// File name stem: `controller-NAME`, `agent-NAME`, `operator-NAME`.
    fn stem(&self) -> String {
        match self {
            Subject::Controller { name, .. } => format!("controller-{name}"),
            Subject::Agent { name } => format!("agent-{name}"),
            Subject::Operator { name, .. } => format!("operator-{name}"),
        }
    }
}

/// Issues a certificate signed by the CA in `dir`, valid for `days`, and
/// writes `STEM.pem` and `STEM-key.pem` (mode 0600) there; returns their
/// paths. Issuing again for the same name replaces them (rotation).
pub fn issue(dir: &Path, subject: &Subject, days: u32) -> anyhow::Result<(PathBuf, PathBuf)> {
    let identity = subject.identity();
    chimera_domain::ids::check_id("name", identity.name()).map_err(|e| anyhow::anyhow!(e))?;
    let (ca_cert, ca_key) = ca_paths(dir);
    let ca_pem = std::fs::read_to_string(&ca_cert).with_context(|| {
        format!(
            "read the CA certificate {} (make one with `chimera tls init --dir {}`)",
            ca_cert.display(),
            dir.display()
        )
    })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key)
        .with_context(|| format!("read the CA key {}", ca_key.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parse the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parse the CA certificate")?;

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, identity.name());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "chimera");
    let uri = identity
        .uri()
        .try_into()
        .map_err(|e| anyhow::anyhow!("identity URI {}: {e}", identity.uri()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    match subject {
        Subject::Controller { hosts, .. } => {
            if hosts.is_empty() {
                bail!("a controller certificate needs at least one --host (the DNS name or IP address clients use)");
            }
            for h in hosts {
                let san = match h.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        h.clone()
                            .try_into()
                            .map_err(|e| anyhow::anyhow!("--host `{h}` is not a DNS name: {e}"))?,
                    ),
                };
                params.subject_alt_names.push(san);
            }
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                // A controller is also a client (of another controller, in tests).
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        Subject::Agent { .. } | Subject::Operator { .. } => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    validity(&mut params, days);
    let key = KeyPair::generate().context("generate the key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("sign the certificate")?;
    let stem = subject.stem();
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_ca_issues_certificates_that_name_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = init_ca(dir.path(), 30, false).unwrap();
        assert_eq!(
            std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(ca.exists());
        let e = init_ca(dir.path(), 30, false).unwrap_err();
        assert!(format!("{e:#}").contains("already holds a CA"), "{e:#}");
        for (subject, id) in [
            (
                Subject::Agent {
                    name: "gpu-1".into(),
                },
                Identity::Agent("gpu-1".into()),
            ),
            (
                Subject::Operator {
                    name: "ci".into(),
                    role: Role::Viewer,
                },
                Identity::Operator {
                    name: "ci".into(),
                    role: Role::Viewer,
                },
            ),
            (
                Subject::Controller {
                    name: "c1".into(),
                    hosts: vec!["127.0.0.1".into(), "localhost".into()],
                },
                Identity::Controller("c1".into()),
            ),
        ] {
            let (cert, key) = issue(dir.path(), &subject, 30).unwrap();
            assert_eq!(
                std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let pem = std::fs::read(&cert).unwrap();
            let der = x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents;
            assert_eq!(crate::auth::certificate_identity(&der), Some(id));
        }
        let e = issue(
            dir.path(),
            &Subject::Agent {
                name: "../x".into(),
            },
            30,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("name"), "{e:#}");
        let none = tempfile::tempdir().unwrap();
        let e = issue(none.path(), &Subject::Agent { name: "a".into() }, 1).unwrap_err();
        assert!(format!("{e:#}").contains("chimera tls init"), "{e:#}");
    }
}
