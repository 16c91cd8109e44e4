//! Client-side TLS to a controller, the same for the agent and the CLI:
//! the CA that signed the controller's certificate, and optionally a client
//! certificate (an agent's, or an operator's) for mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// TLS files of a client (`--tls-ca`, `--tls-cert`, `--tls-key`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA (PEM) that signed the controller's certificate; without it, the
    /// system's trusted roots.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

impl ClientTls {
    /// Whether any TLS file is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// tonic's client TLS settings for a controller at `domain` (the host of
    /// its URL, which its certificate must name). The files are read now;
    /// an unreadable one, or a certificate without its key, is an error
    /// naming the flag.
    pub fn config(&self, domain: &str) -> Result<ClientTlsConfig, String> {
        let mut c = ClientTlsConfig::new().domain_name(domain.to_owned());
        c = match &self.ca {
            Some(ca) => c.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
            None => c.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(c.identity(Identity::from_pem(
                read("--tls-cert", cert)?,
                read("--tls-key", key)?,
            ))),
            (None, None) => Ok(c),
            (Some(_), None) => Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".into()),
        }
    }

    /// An endpoint for `url`: TLS for `https://` URLs (an `http://` URL with
    /// TLS files given is an error, not a silent plaintext connection).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("controller URL `{url}`: {e}"))?
            .connect_timeout(Duration::from_secs(5));
        let uri = endpoint.uri().clone();
        match uri.scheme_str() {
            Some("https") => {
                let host = uri.host().unwrap_or_default();
                // An IPv6 literal comes bracketed in a URI; certificates name it bare.
                let host = host.trim_start_matches('[').trim_end_matches(']');
                endpoint
                    .tls_config(self.config(host)?)
                    .map_err(|e| format!("TLS for {url}: {e}"))
            }
            _ if self.is_set() => Err(format!(
                "TLS files are given but the controller URL `{url}` is not https://"
            )),
            _ => Ok(endpoint),
        }
    }
}
