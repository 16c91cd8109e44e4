//! Who may call what: a tower layer in front of every gRPC service that
//! works out the caller (a bearer token, or a client certificate's identity
//! URI) and checks it against what the method needs, before any handler
//! runs. Handlers never check permissions; they read the [`Caller`] the
//! layer put in the request's extensions (for the audit log and for the
//! agent-name check of `hello`).
//!
//! Modes, from the controller's flags:
//! - no `--tokens-file` and no `--tls-client-ca`: every caller is
//!   [`Caller::Anonymous`] and may do everything (loopback dev mode; the
//!   controller refuses a non-loopback address without TLS unless
//!   `--allow-insecure`);
//! - `--tokens-file`: operator calls need a known token (or an operator
//!   certificate); the role decides which calls;
//! - `--tls-client-ca`: the agent service needs an agent certificate signed by
//!   that CA, and operator calls need a token or an operator certificate.
//!
//! Tokens are 256-bit random strings; the file keeps their SHA-256 only (a
//! slow password hash buys nothing for a secret with 256 bits of entropy).

use chimera_domain::identity::{Identity, Role};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tonic::body::Body;
use tonic::codegen::http;
use tracing::{info, warn};

/// Who is calling, as the auth layer established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No authentication is configured (loopback dev mode).
    Anonymous,
    /// A bearer token from the tokens file, by its name.
    Token { name: String, role: Role },
    /// A verified client certificate's identity.
    Certificate(Identity),
}

impl Caller {
    /// The name the audit log records (`token:ci`, `cert:operator/alice`,
    /// `cert:agent/gpu-1`, `anonymous`).
    pub fn audit_name(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".to_owned(),
            Caller::Token { name, .. } => format!("token:{name}"),
            Caller::Certificate(Identity::Agent(n)) => format!("cert:agent/{n}"),
            Caller::Certificate(Identity::Operator { name, .. }) => format!("cert:operator/{name}"),
            Caller::Certificate(Identity::Controller(n)) => format!("cert:controller/{n}"),
        }
    }

    /// The caller of a request (the layer always sets one; a request that
    /// did not pass through it counts as anonymous).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)
    }
}

/// What a gRPC method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Anyone (the health service).
    Open,
    /// An operator of at least this role.
    Role(Role),
    /// An agent.
    Agent,
}

/// What each method needs, by its gRPC path. Unknown paths need admin (a
/// method added later is closed until it is listed here).
pub fn need(path: &str) -> Need {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Role(Role::Admin);
    };
    match service {
        "grpc.health.v1.Health" => Need::Open,
        "chimera.v1.AgentService" => Need::Agent,
        "chimera.v1.OperatorService" => match method {
            "GetSweep" | "ListSweeps" | "ListTrials" | "ListAgents" | "WatchSweep"
            | "GetTelemetry" | "LiveTelemetry" => Need::Role(Role::Viewer),
            "SubmitSweep" | "CancelSweep" => Need::Role(Role::Operator),
            _ => Need::Role(Role::Admin),
        },
        _ => Need::Role(Role::Admin),
    }
}

/// One entry of the tokens file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenEntry {
    /// Who holds it (`ci`, `alice`): what the audit log records.
    pub name: String,
    /// What it may do.
    pub role: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was made (RFC 3339), for the operator's bookkeeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// The tokens file: `[[tokens]]` tables of name, role and sha256.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TokensFile {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// Prefix of every token `chimera token create` makes.
pub const TOKEN_PREFIX: &str = "chm_";

/// SHA-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TokensFile {
    /// Parses and checks a tokens file: names are ids and unique, roles
    /// known, hashes 64 hex digits. Errors name the entry and field.
    pub fn parse(text: &str) -> Result<TokensFile, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = std::collections::HashSet::new();
        for (i, t) in file.tokens.iter().enumerate() {
            chimera_domain::ids::check_id(&format!("tokens[{i}].name"), &t.name)?;
            t.role
                .parse::<Role>()
                .map_err(|e| format!("tokens[{i}].role: {e}"))?;
            if t.sha256.len() != 64 || !t.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "tokens[{i}].sha256 of `{}` must be 64 hex digits",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("tokens[{i}].name `{}` is repeated", t.name));
            }
        }
        Ok(file)
    }
}

/// Known tokens by their hash: (name, role); and the file's mtime they were read at.
type Known = (Option<SystemTime>, HashMap<String, (String, Role)>);

/// The tokens the controller accepts, reloaded when the file changes (so a
/// token is added or revoked without a restart).
pub struct Tokens {
    path: PathBuf,
    state: RwLock<Known>,
}

impl Tokens {
    /// Loads `path`; an unreadable or invalid file is an error naming it.
    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        let tokens = Tokens {
            path: path.to_owned(),
            state: RwLock::new((None, HashMap::new())),
        };
        tokens.reload()?;
        Ok(tokens)
    }

    fn read(path: &Path) -> anyhow::Result<Known> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("read the tokens file {}: {e}", path.display()))?;
        let file = TokensFile::parse(&text)
            .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?;
        let map = file
            .tokens
            .into_iter()
            .filter_map(|t| {
                let role = t.role.parse().ok()?;
                Some((t.sha256.to_ascii_lowercase(), (t.name, role)))
            })
            .collect();
        Ok((modified, map))
    }

    /// Reads the file again if it changed since the last read; a file that
    /// became invalid keeps the tokens read before (and says so).
    pub fn reload(&self) -> anyhow::Result<()> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let known = self.state.read().map(|s| s.0).unwrap_or(None);
        if known.is_some() && known == modified {
            return Ok(());
        }
        let (modified, map) = Self::read(&self.path)?;
        info!(file = %self.path.display(), tokens = map.len(), "tokens loaded");
        if let Ok(mut s) = self.state.write() {
            *s = (modified, map);
        }
        Ok(())
    }

    /// The name and role of a presented token.
    pub fn check(&self, token: &str) -> Option<(String, Role)> {
        let hash = token_hash(token);
        self.state.read().ok()?.1.get(&hash).cloned()
    }

    /// Polls the file every `every` until `shutdown`, reloading on change;
    /// the task is `tasks`'s, for the caller to wait on.
    pub fn watch(
        self: Arc<Self>,
        every: Duration,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let me = self.clone();
                let r = tokio::task::spawn_blocking(move || me.reload()).await;
                if let Ok(Err(e)) = r {
                    warn!(error = %format!("{e:#}"), "tokens file not reloaded; the tokens read before stay in force");
                }
            }
        });
    }
}

/// What the auth layer enforces.
#[derive(Clone, Default)]
pub struct Policy {
    /// Bearer tokens (`--tokens-file`).
    pub tokens: Option<Arc<Tokens>>,
    /// Client certificates are verified against a CA (`--tls-client-ca`):
    /// agents must present one.
    pub client_certs: bool,
}

impl Policy {
    /// Whether operators must authenticate.
    fn operators_authenticate(&self) -> bool {
        self.tokens.is_some() || self.client_certs
    }

    /// Who the caller is and whether it may call `path`: the caller, or the
    /// status to refuse with. A pure function of its inputs.
    pub fn decide(
        &self,
        path: &str,
        bearer: Option<&str>,
        certificate: Option<&Identity>,
    ) -> Result<Caller, tonic::Status> {
        match need(path) {
            Need::Open => Ok(Caller::Anonymous),
            Need::Agent => {
                if !self.client_certs {
                    return Ok(Caller::Anonymous);
                }
                match certificate {
                    Some(id @ Identity::Agent(_)) => Ok(Caller::Certificate(id.clone())),
                    Some(other) => Err(tonic::Status::permission_denied(format!(
                        "the agent service takes agent certificates; this one is for {other}"
                    ))),
                    None => Err(tonic::Status::unauthenticated(
                        "the agent service needs a client certificate (chimera tls issue agent NAME; chimera-agent --tls-cert/--tls-key)",
                    )),
                }
            }
            Need::Role(needed) => {
                if !self.operators_authenticate() {
                    return Ok(Caller::Anonymous);
                }
                let method = path.rsplit('/').next().unwrap_or(path);
                let (caller, role) = match (bearer, certificate) {
                    (Some(token), _) => {
                        let Some((name, role)) =
                            self.tokens.as_ref().and_then(|t| t.check(token))
                        else {
                            return Err(tonic::Status::unauthenticated(
                                "the bearer token is not one this controller knows (revoked, or from another tokens file)",
                            ));
                        };
                        (Caller::Token { name, role }, role)
                    }
                    (None, Some(Identity::Operator { name, role })) => (
                        Caller::Certificate(Identity::Operator {
                            name: name.clone(),
                            role: *role,
                        }),
                        *role,
                    ),
                    (None, Some(other)) => {
                        return Err(tonic::Status::permission_denied(format!(
                            "{method} takes an operator token or certificate; this certificate is for {other}"
                        )))
                    }
                    (None, None) => {
                        return Err(tonic::Status::unauthenticated(format!(
                            "{method} needs a bearer token (CHIMERA_TOKEN, `authorization: Bearer ...`) or an operator client certificate"
                        )))
                    }
                };
                if role < needed {
                    return Err(tonic::Status::permission_denied(format!(
                        "{} has role {role}; {method} needs {needed}",
                        caller.audit_name()
                    )));
                }
                Ok(caller)
            }
        }
    }
}

/// The identity a client certificate (DER) names in its URI SANs.
pub fn certificate_identity(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => Identity::from_uri(uri),
        _ => None,
    })
}

/// The bearer token of an `authorization` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The tower layer; see the module docs.
#[derive(Clone)]
pub struct AuthLayer {
    pub policy: Arc<Policy>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// [`AuthLayer`]'s service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<Policy>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let certificate = request
            .extensions()
            .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
            .and_then(|certs| certs.first().and_then(|c| certificate_identity(c)));
        let decision = self.policy.decide(
            request.uri().path(),
            bearer(request.headers()),
            certificate.as_ref(),
        );
        match decision {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                // The service that was polled ready serves this call; a
                // clone takes its place for the next one.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                warn!(
                    target: "audit",
                    method = %request.uri().path(),
                    code = ?status.code(),
                    reason = %status.message(),
                    "refused"
                );
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(entries: &[(&str, &str, &str)]) -> (tempfile::TempDir, Arc<Tokens>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let file = TokensFile {
            tokens: entries
                .iter()
                .map(|(name, role, token)| TokenEntry {
                    name: (*name).into(),
                    role: (*role).into(),
                    sha256: token_hash(token),
                    created: None,
                })
                .collect(),
        };
        std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
        (dir, Arc::new(Tokens::load(&path).unwrap()))
    }

    const SUBMIT: &str = "/chimera.v1.OperatorService/SubmitSweep";
    const CANCEL: &str = "/chimera.v1.OperatorService/CancelSweep";
    const DRAIN: &str = "/chimera.v1.OperatorService/DrainAgent";
    const LIST: &str = "/chimera.v1.OperatorService/ListSweeps";
    const SESSION: &str = "/chimera.v1.AgentService/Session";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    #[test]
    fn every_method_has_a_need_and_unknown_ones_are_closed() {
        assert_eq!(need(LIST), Need::Role(Role::Viewer));
        assert_eq!(need(SUBMIT), Need::Role(Role::Operator));
        assert_eq!(need(CANCEL), Need::Role(Role::Operator));
        assert_eq!(need(DRAIN), Need::Role(Role::Admin));
        assert_eq!(need(SESSION), Need::Agent);
        assert_eq!(need(HEALTH), Need::Open);
        assert_eq!(
            need("/chimera.v1.OperatorService/NewThing"),
            Need::Role(Role::Admin)
        );
        assert_eq!(need("garbage"), Need::Role(Role::Admin));
    }

    #[test]
    fn without_auth_configured_everyone_is_anonymous() {
        let p = Policy::default();
        for path in [SUBMIT, DRAIN, SESSION] {
            assert_eq!(p.decide(path, None, None).unwrap(), Caller::Anonymous);
        }
    }

    #[test]
    fn roles_decide_what_a_token_may_call() {
        let (_d, t) = tokens(&[
            ("v", "viewer", "chm_v"),
            ("o", "operator", "chm_o"),
            ("a", "admin", "chm_a"),
        ]);
        let p = Policy {
            tokens: Some(t),
            client_certs: false,
        };
        assert!(p.decide(LIST, Some("chm_v"), None).is_ok());
        let e = p.decide(CANCEL, Some("chm_v"), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "token:v has role viewer; CancelSweep needs operator"
        );
        assert!(p.decide(SUBMIT, Some("chm_o"), None).is_ok());
        let e = p.decide(DRAIN, Some("chm_o"), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            p.decide(DRAIN, Some("chm_a"), None).unwrap(),
            Caller::Token {
                name: "a".into(),
                role: Role::Admin
            }
        );
        let e = p.decide(LIST, Some("chm_wrong"), None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = p.decide(LIST, None, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // Without client certificates, agents stay as they were (loopback).
        assert!(p.decide(SESSION, None, None).is_ok());
    }

    #[test]
    fn certificates_carry_their_kind_and_role() {
        let p = Policy {
            tokens: None,
            client_certs: true,
        };
        let agent = Identity::Agent("gpu-1".into());
        let admin = Identity::Operator {
            name: "alice".into(),
            role: Role::Admin,
        };
        assert_eq!(
            p.decide(SESSION, None, Some(&agent)).unwrap(),
            Caller::Certificate(agent.clone())
        );
        let e = p.decide(SESSION, None, Some(&admin)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = p.decide(SESSION, None, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(p.decide(DRAIN, None, Some(&admin)).is_ok());
        let e = p.decide(SUBMIT, None, Some(&agent)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("agent gpu-1"), "{}", e.message());
    }

    #[test]
    fn a_tokens_file_is_checked_and_reloaded() {
        let (dir, t) = tokens(&[("ci", "operator", "chm_1")]);
        assert_eq!(t.check("chm_1"), Some(("ci".into(), Role::Operator)));
        let path = dir.path().join("tokens.toml");
        // A change is picked up (mtime granularity: make it differ).
        std::thread::sleep(Duration::from_millis(20));
        let file = TokensFile {
            tokens: vec![TokenEntry {
                name: "ci2".into(),
                role: "viewer".into(),
                sha256: token_hash("chm_2"),
                created: None,
            }],
        };
        std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
        let f = std::fs::File::options().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        t.reload().unwrap();
        assert_eq!(t.check("chm_1"), None);
        assert_eq!(t.check("chm_2"), Some(("ci2".into(), Role::Viewer)));
        for (bad, what) in [
            (
                "[[tokens]]\nname = \"a b\"\nrole = \"admin\"\nsha256 = \"00\"\n",
                "tokens[0].name",
            ),
            (
                "[[tokens]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n",
                "tokens[0].role",
            ),
            (
                "[[tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"00\"\n",
                "tokens[0].sha256",
            ),
        ] {
            let e = TokensFile::parse(bad).unwrap_err();
            assert!(e.contains(what), "{e}");
        }
    }
}
