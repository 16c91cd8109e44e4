//! `chimera tls` (a small fleet's CA and certificates) and `chimera token`
//! (operators' bearer tokens in a controller's tokens file). Both work on
//! local files only; the controller reads them (see docs/SECURITY.md).

use anyhow::{bail, Context};
use chimera_controller::auth::{token_hash, TokenEntry, TokensFile, TOKEN_PREFIX};
use chimera_controller::tls::{self, Subject};
use chimera_domain::identity::Role;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// `chimera tls ...`
#[derive(Subcommand, Debug)]
pub enum TlsCmd {
    /// Make a CA: DIR/ca.pem and DIR/ca-key.pem (mode 0600). Keep the key
    /// offline once the fleet's certificates are issued.
    Init {
        /// Directory of the CA (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by the CA in DIR; writes DIR/KIND-NAME.pem
    /// and DIR/KIND-NAME-key.pem (mode 0600) and prints their paths.
    /// Issuing again for a name replaces its files (rotation).
    Issue {
        /// Directory of the CA (`chimera tls init`).
        #[arg(long)]
        dir: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[command(subcommand)]
        what: IssueCmd,
    },
}

/// What to issue a certificate for.
#[derive(Subcommand, Debug)]
pub enum IssueCmd {
    /// A controller's server certificate.
    Controller {
        /// A DNS name or IP address clients reach the controller by; repeat for several.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// The controller's name in its identity URI.
        #[arg(long, default_value = "controller")]
        name: String,
    },
    /// An agent's client certificate: the controller accepts a hello only
    /// under the name it carries.
    Agent {
        /// The agent's name (`chimera-agent --name`).
        name: String,
    },
    /// An operator's client certificate, with a role (instead of a token).
    Operator {
        /// Who holds it (recorded in the audit log).
        name: String,
        /// viewer (read), operator (+ submit, cancel) or admin (+ drain).
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
    },
}

/// `chimera token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a token: adds its name, role and SHA-256 to FILE (created with
    /// mode 0600 if missing) and prints only the token on stdout. The token
    /// itself is stored nowhere; a controller re-reads FILE within seconds.
    Create {
        /// The controller's tokens file (`chimera-controller --tokens-file`).
        #[arg(long)]
        tokens_file: PathBuf,
        /// Who holds it (recorded in the audit log); letters, digits, `.`, `_`, `-`.
        #[arg(long)]
        name: String,
        /// viewer (read), operator (+ submit, cancel) or admin (+ drain).
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
    },
    /// Remove a token from FILE by name; the controller refuses it within seconds.
    Revoke {
        #[arg(long)]
        tokens_file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// The tokens in FILE: name, role, created (never the tokens, which it does not hold).
    List {
        #[arg(long)]
        tokens_file: PathBuf,
    },
}

/// Runs `chimera tls ...`.
pub fn tls(cmd: TlsCmd) -> anyhow::Result<i32> {
    match cmd {
        TlsCmd::Init { dir, days, force } => {
            let (cert, key) = tls::init_ca(&dir, days, force)?;
            println!("{}", cert.display());
            println!("{}", key.display());
            eprintln!(
                "CA made; issue certificates with `chimera tls issue --dir {}`",
                dir.display()
            );
        }
        TlsCmd::Issue { dir, days, what } => {
            let subject = match what {
                IssueCmd::Controller { hosts, name } => Subject::Controller { name, hosts },
                IssueCmd::Agent { name } => Subject::Agent { name },
                IssueCmd::Operator { name, role } => Subject::Operator { name, role },
            };
            let (cert, key) = tls::issue(&dir, &subject, days)?;
            println!("{}", cert.display());
            println!("{}", key.display());
        }
    }
    Ok(0)
}

fn read_tokens(path: &Path) -> anyhow::Result<TokensFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => TokensFile::parse(&text)
            .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Replaces the tokens file atomically. A new file gets mode 0600; an
/// existing one keeps its mode (at most 0640) and group, so a controller
/// running as a service user in that group still reads it.
fn write_tokens(path: &Path, file: &TokensFile) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let text = format!(
        "# Chimera operators' tokens: name, role and SHA-256 (never the token).\n\
         # Managed by `chimera token create|revoke|list`; read by `chimera-controller --tokens-file`.\n\n{}",
        toml::to_string(file).context("write the tokens file")?
    );
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = std::fs::metadata(path).ok();
    let mode = existing.as_ref().map_or(0o600, |m| m.mode() & 0o640);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tokens.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("create a temporary file in {}", dir.display()))?;
    if let Some(m) = &existing {
        std::os::unix::fs::fchown(tmp.as_file(), None, Some(m.gid()))
            .with_context(|| format!("give the new {} its group", path.display()))?;
    }
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

/// Runs `chimera token ...`.
pub fn token(cmd: TokenCmd) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create {
            tokens_file,
            name,
            role,
        } => {
            chimera_domain::ids::check_id("--name", &name).map_err(anyhow::Error::msg)?;
            let mut file = read_tokens(&tokens_file)?;
            if file.tokens.iter().any(|t| t.name == name) {
                bail!(
                    "{} already has a token named `{name}`: revoke it first (`chimera token revoke`) or pick another name",
                    tokens_file.display()
                );
            }
            let mut bytes = [0u8; 32];
            rand::Rng::fill(&mut rand::rng(), &mut bytes);
            let token = format!(
                "{TOKEN_PREFIX}{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            file.tokens.push(TokenEntry {
                name: name.clone(),
                role: role.name().to_owned(),
                sha256: token_hash(&token),
                created: Some(
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                ),
            });
            write_tokens(&tokens_file, &file)?;
            println!("{token}");
            eprintln!(
                "token `{name}` ({role}) added to {}; give it to its holder as CHIMERA_TOKEN (it is shown only now)",
                tokens_file.display()
            );
        }
        TokenCmd::Revoke { tokens_file, name } => {
            let mut file = read_tokens(&tokens_file)?;
            let before = file.tokens.len();
            file.tokens.retain(|t| t.name != name);
            if file.tokens.len() == before {
                bail!("{} has no token named `{name}`", tokens_file.display());
            }
            write_tokens(&tokens_file, &file)?;
            eprintln!("token `{name}` revoked");
        }
        TokenCmd::List { tokens_file } => {
            for t in read_tokens(&tokens_file)?.tokens {
                println!(
                    "{}\t{}\t{}",
                    t.name,
                    t.role,
                    t.created.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(0)
}
