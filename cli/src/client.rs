//! Talking to a controller: how to connect (TLS, a bearer token, the leader
//! among several controllers), and the calls several commands share
//! (submit, fetching a sweep's results, listing every page, a sweep id
//! from a unique prefix of it); and what they read from files instead (a
//! sweep spec, a results.json).
//!
//! The connection settings come from the global flags and the environment
//! once, in `main`, and are kept for the process ([`configure`]);
//! `chimera run` talks to its in-process controller without them
//! ([`connect_with`] and [`Connection::default`]).

use anyhow::{bail, Context};
use chimera_domain::results::{ResultsFile, SweepSummary, TrialRecord};
use chimera_proto::v1 as proto;
use chimera_proto::v1::operator_service_client::OperatorServiceClient;
use std::path::Path;
use std::sync::OnceLock;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

/// How to reach the controller.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// TLS files (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub tls: chimera_observe::tls::ClientTls,
    /// A bearer token (`CHIMERA_TOKEN`).
    pub token: Option<String>,
}

static CONNECTION: OnceLock<Connection> = OnceLock::new();

/// Sets the process's connection settings (once, from `main`).
pub fn configure(c: Connection) {
    let _ = CONNECTION.set(c);
}

/// Adds `authorization: Bearer TOKEN` to every call when a token is set.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client of the operator API.
pub type Client = OperatorServiceClient<InterceptedService<Channel, Bearer>>;

/// Connects with the process's settings (see [`configure`]).
pub async fn connect(urls: &str) -> anyhow::Result<Client> {
    let default = Connection::default();
    connect_with(urls, CONNECTION.get().unwrap_or(&default)).await
}

/// Connects to the leading controller among `urls` (comma-separated). A
/// standby names the leader; it is followed only when it is one of `urls`
/// (a hint from a controller is not a reason to send a token elsewhere).
pub async fn connect_with(urls: &str, conn: &Connection) -> anyhow::Result<Client> {
    let list: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.len() == 1 {
        // One controller: no leader to look for.
        return connect_one(&list[0], conn).await;
    }
    let mut todo: std::collections::VecDeque<String> = list.iter().cloned().collect();
    let mut tried = Vec::new();
    let mut why = Vec::new();
    while let Some(url) = todo.pop_front() {
        if tried.contains(&url) {
            continue;
        }
        tried.push(url.clone());
        let mut client = match connect_one(&url, conn).await {
            Ok(c) => c,
            Err(e) => {
                why.push(format!("{e:#}"));
                continue;
            }
        };
        // Only the leader answers; a standby names it.
        match client
            .list_agents(proto::ListAgentsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
        {
            Ok(_) => return Ok(client),
            Err(s) => {
                let leader = chimera_observe::leader::leader(&s);
                match leader {
                    Some(l) if list.iter().any(|u| u == l) => todo.push_front(l.to_owned()),
                    Some(l) => why.push(format!(
                        "{url} names {} as the leader, which is not in --controller; not followed",
                        chimera_domain::wire::quote(l)
                    )),
                    None => {}
                }
                why.push(format!("{url}: {}", s.message()));
            }
        }
    }
    bail!("no leading controller among {urls}: {}", why.join("; "))
}

async fn connect_one(url: &str, conn: &Connection) -> anyhow::Result<Client> {
    let endpoint = conn.tls.endpoint(url).map_err(anyhow::Error::msg)?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("reach the controller at {url}"))?;
    let bearer = match &conn.token {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
            anyhow::anyhow!("CHIMERA_TOKEN holds characters a header cannot carry")
        })?),
        None => None,
    };
    Ok(
        OperatorServiceClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(4 << 20),
    )
}

/// A gRPC status as an error that says what the controller said.
pub fn status(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what}: {}", s.message())
}

/// Submits a spec. The span is the root of the sweep's trace: the
/// controller's submit, every assignment and every agent run descend from it.
pub async fn submit(
    client: &mut Client,
    spec: String,
    source_name: &str,
    wait_for_agents: bool,
) -> anyhow::Result<proto::SubmitSweepResponse> {
    let span = tracing::info_span!("chimera.cli.submit", file = %source_name);
    let mut req = tonic::Request::new(proto::SubmitSweepRequest {
        spec_yaml: spec,
        source_name: source_name.to_owned(),
        no_wait_for_agents: !wait_for_agents,
    });
    chimera_observe::inject_metadata(&span, req.metadata_mut());
    Ok(client
        .submit_sweep(req)
        .instrument(span)
        .await
        .map_err(status("submit the sweep"))?
        .into_inner())
}

/// Every item of a paged list: `page(client, token)` asks for one page
/// and answers its items and the next page's token (empty on the last).
async fn all_pages<T, Fut>(
    client: &Client,
    mut page: impl FnMut(Client, String) -> Fut,
) -> anyhow::Result<Vec<T>>
where
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(client.clone(), token).await?;
        out.extend(items);
        if next.is_empty() {
            return Ok(out);
        }
        token = next;
    }
}

/// Every trial of a sweep, page by page.
pub async fn all_trials(client: &mut Client, sweep: &str) -> anyhow::Result<Vec<proto::Trial>> {
    all_pages(client, |mut c, page_token| {
        let sweep_id = sweep.to_owned();
        async move {
            let req = proto::ListTrialsRequest {
                sweep_id,
                page_size: 0,
                page_token,
            };
            let what = "list the sweep's trials";
            let page = c.list_trials(req).await.map_err(status(what))?.into_inner();
            Ok((page.trials, page.next_page_token))
        }
    })
    .await
}

/// Every sweep, newest first, page by page.
pub async fn all_sweeps(client: &mut Client) -> anyhow::Result<Vec<proto::Sweep>> {
    all_pages(client, |mut c, page_token| async move {
        let req = proto::ListSweepsRequest {
            page_size: 0,
            page_token,
        };
        let page = c
            .list_sweeps(req)
            .await
            .map_err(status("list sweeps"))?
            .into_inner();
        Ok((page.sweeps, page.next_page_token))
    })
    .await
}

/// Every connected agent, by name, page by page.
pub async fn all_agents(client: &mut Client) -> anyhow::Result<Vec<proto::Agent>> {
    all_pages(client, |mut c, page_token| async move {
        let req = proto::ListAgentsRequest {
            page_size: 0,
            page_token,
        };
        let page = c
            .list_agents(req)
            .await
            .map_err(status("list agents"))?
            .into_inner();
        Ok((page.agents, page.next_page_token))
    })
    .await
}

/// The results of a sweep held by a controller.
pub async fn fetch_results(client: &mut Client, sweep: &str) -> anyhow::Result<ResultsFile> {
    let s = client
        .get_sweep(proto::GetSweepRequest {
            sweep_id: sweep.to_owned(),
        })
        .await
        .map_err(status("get the sweep"))?
        .into_inner();
    let trials = all_trials(client, sweep)
        .await?
        .into_iter()
        .map(TrialRecord::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("read the controller's answer: {e}"))?;
    Ok(ResultsFile::new(
        SweepSummary {
            id: s.id.clone(),
            name: s.name.clone(),
            workload: s.workload.clone(),
            state: crate::output::sweep_state(s.state).to_owned(),
            created_unix_ms: s.created_unix_ms,
            order_seed: Some(s.order_seed),
        },
        trials,
    ))
}

/// Reads a spec file.
pub fn read_spec(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read sweep spec {}", path.display()))
}

/// A sweep's results from a results.json path, or from the controller by
/// id or a unique prefix of one. An argument that looks like a path (it has
/// a `/` or ends in `.json`) but names no file is refused as such, rather
/// than sent to the controller as an id.
pub async fn load_results(url: &str, sweep_or_path: &str) -> anyhow::Result<ResultsFile> {
    let path = Path::new(sweep_or_path);
    if path.is_file() {
        load_results_file(path)
    } else if looks_like_path(sweep_or_path) {
        bail!("read {sweep_or_path}: no such file (and a sweep id has no `/` or `.json`)")
    } else {
        let mut client = connect(url).await?;
        let id = resolve_sweep(&mut client, sweep_or_path).await?;
        fetch_results(&mut client, &id).await
    }
}

/// Whether a command's sweep argument is meant as a file.
fn looks_like_path(arg: &str) -> bool {
    arg.contains(['/', std::path::MAIN_SEPARATOR]) || arg.ends_with(".json")
}

/// Characters in a sweep id (a ULID).
pub const SWEEP_ID_LEN: usize = 26;

/// The sweep id `arg` names: the id itself when it is whole, as the
/// controller writes ids (it checks it), else the one sweep whose id starts
/// with it (letter case aside), found by listing the controller's sweeps.
pub async fn resolve_sweep(client: &mut Client, arg: &str) -> anyhow::Result<String> {
    let arg = arg.trim();
    if is_whole_id(arg) {
        return Ok(arg.to_owned());
    }
    let sweeps = all_sweeps(client).await?;
    match_sweep_id(arg, sweeps.iter().map(|s| (s.id.as_str(), s.name.as_str())))
}

/// Whether `arg` is a whole sweep id as the controller writes them (a
/// ULID: 26 characters, digits and capitals), so no listing is needed.
fn is_whole_id(arg: &str) -> bool {
    arg.len() == SWEEP_ID_LEN
        && arg
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

/// Candidates an ambiguous prefix lists before "and N more".
const CANDIDATES_SHOWN: usize = 10;

/// The one sweep among `sweeps` (id, name) whose id is `prefix` or starts
/// with it, letter case aside; an error naming the prefix when none does,
/// or listing the candidates when several do.
pub fn match_sweep_id<'a>(
    prefix: &str,
    sweeps: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<String> {
    if prefix.is_empty() {
        bail!("sweep id: empty; give a sweep id or a prefix of one (`chimera sweep list`)");
    }
    let wanted = prefix.to_ascii_uppercase();
    let mut found: Vec<(&str, &str)> = sweeps
        .into_iter()
        .filter(|(id, _)| id.to_ascii_uppercase().starts_with(&wanted))
        .collect();
    if let Some(exact) = found.iter().find(|(id, _)| id.eq_ignore_ascii_case(prefix)) {
        return Ok(exact.0.to_owned());
    }
    found.sort();
    match found.as_slice() {
        [] => bail!(
            "sweep id `{prefix}`: no sweep's id starts with it (`chimera sweep list` shows them)"
        ),
        [(id, _)] => Ok((*id).to_owned()),
        many => {
            let mut names: Vec<String> = many
                .iter()
                .take(CANDIDATES_SHOWN)
                .map(|(id, name)| format!("{id} ({name})"))
                .collect();
            if many.len() > CANDIDATES_SHOWN {
                names.push(format!("and {} more", many.len() - CANDIDATES_SHOWN));
            }
            bail!(
                "sweep id `{prefix}` is ambiguous: {} sweeps' ids start with it: {}; give more of the id",
                many.len(),
                names.join(", ")
            )
        }
    }
}

/// A results.json, refused when its format or version is not one this
/// build reads.
pub fn load_results_file(path: &Path) -> anyhow::Result<ResultsFile> {
    use chimera_domain::results::{RESULTS_FORMAT, RESULTS_VERSION};
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let file: ResultsFile =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    if file.format != RESULTS_FORMAT || file.version > RESULTS_VERSION {
        bail!(
            "{}: format `{}` version {} is not a results file this build reads ({RESULTS_FORMAT} version <= {RESULTS_VERSION})",
            path.display(),
            file.format,
            file.version,
        );
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    const SWEEPS: [(&str, &str); 3] = [
        ("01KAS1Y9N7W1G4E6M9C7V3T2QX", "quickstart"),
        ("01KAS1Y9N7W1G4E6M9C7V3T2QY", "quickstart again"),
        ("01KBZZ0000000000000000000A", "gguf"),
    ];

    fn resolve(prefix: &str) -> String {
        match match_sweep_id(prefix, SWEEPS) {
            Ok(id) => id,
            Err(e) => format!("error: {e:#}"),
        }
    }

    #[test]
    fn a_unique_prefix_names_its_sweep_whatever_the_letter_case() {
        assert_eq!(resolve("01KB"), "01KBZZ0000000000000000000A");
        assert_eq!(resolve("01kbz"), "01KBZZ0000000000000000000A");
        assert_eq!(
            resolve("01KAS1Y9N7W1G4E6M9C7V3T2QY"),
            "01KAS1Y9N7W1G4E6M9C7V3T2QY"
        );
    }

    #[test]
    fn an_ambiguous_or_unknown_prefix_is_an_error_that_says_which() {
        expect![[r#"error: sweep id `01KAS` is ambiguous: 2 sweeps' ids start with it: 01KAS1Y9N7W1G4E6M9C7V3T2QX (quickstart), 01KAS1Y9N7W1G4E6M9C7V3T2QY (quickstart again); give more of the id"#]]
        .assert_eq(&resolve("01KAS"));
        expect![
            "error: sweep id `01Z`: no sweep's id starts with it (`chimera sweep list` shows them)"
        ]
        .assert_eq(&resolve("01Z"));
        expect![
            "error: sweep id: empty; give a sweep id or a prefix of one (`chimera sweep list`)"
        ]
        .assert_eq(&resolve(""));
    }

    #[test]
    fn many_candidates_are_listed_up_to_a_cap() {
        let ids: Vec<String> = (0..12).map(|i| format!("01X{i:023}")).collect();
        let sweeps = ids.iter().map(|id| (id.as_str(), "s"));
        let e = format!("{:#}", match_sweep_id("01X", sweeps).unwrap_err());
        assert!(
            e.contains("12 sweeps") && e.ends_with("and 2 more; give more of the id"),
            "{e}"
        );
    }

    #[test]
    fn only_a_whole_id_as_the_controller_writes_it_skips_the_listing() {
        assert!(is_whole_id("01KAS1Y9N7W1G4E6M9C7V3T2QX"));
        assert!(!is_whole_id("01kas1y9n7w1g4e6m9c7v3t2qx"));
        assert!(!is_whole_id("01KAS1Y9"));
    }

    #[test]
    fn a_path_is_told_from_a_sweep_id() {
        assert!(looks_like_path("chimera-demo/results.json"));
        assert!(looks_like_path("results.json"));
        assert!(!looks_like_path("01KAS1Y9"));
    }
}
