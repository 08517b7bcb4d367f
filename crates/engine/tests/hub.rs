//! Hugging Face model ids (`org/name[@revision]`): the cache, the download through hf-hub, and
//! the errors. A small HTTP server in each test serves fixture repositories in the Hub's layout:
//! `GET /api/models/{repo}/revision/{rev}` (the commit and the file list) and
//! `HEAD`/`GET /{repo}/resolve/{rev}/{file}` (with `X-Repo-Commit`, `ETag`, `Content-Length`).
//! Every test has its own cache and passes its Hub settings explicitly, so nothing reads or
//! changes the environment.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use finerank_engine::{
    resolve_with, DeviceChoice, HubSettings, LoadOptions, Registry, Reranker, ScoreOptions,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/tiny-bert-cross-encoder")
}

fn commit(n: u8) -> String {
    format!("{n:x}").repeat(40)
}

/// One revision of a repository: the branch or tag that names it, its commit, its files.
struct Revision {
    name: &'static str,
    commit: String,
    files: BTreeMap<String, Vec<u8>>,
}

type Repos = BTreeMap<&'static str, Vec<Revision>>;

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// The fixture Hub: serves `repos` until dropped, and records every request.
struct Hub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct State {
    repos: Repos,
    /// Files answered with 500, as a Hub that fails mid-download.
    failing: HashSet<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Hub {
    fn start(repos: Repos) -> Hub {
        Hub::start_failing(repos, &[])
    }

    fn start_failing(repos: Repos, failing: &[&str]) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State {
            repos,
            failing: failing.iter().map(|s| s.to_string()).collect(),
            seen: seen.clone(),
        });
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Hub {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Closes the listener: from here on a connection is refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn etag(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}{:08x}", h.finish(), bytes.len())
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) {
    let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(text.as_bytes());
    if !head {
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
}

fn serve(mut stream: TcpStream, state: &State) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization,
    });
    let head = method == "HEAD";
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let find = |repo: &str, rev: &str| {
        state
            .repos
            .get(repo)
            .and_then(|revs| revs.iter().find(|r| r.name == rev || r.commit == rev))
    };
    let not_found = |stream: &mut TcpStream, code: &str, commit: Option<&str>| {
        let mut headers = vec![("X-Error-Code", code.to_string())];
        if let Some(c) = commit {
            headers.push(("X-Repo-Commit", c.to_string()));
        }
        let body = format!("{{\"error\":\"{code}\"}}");
        respond(stream, "404 Not Found", &headers, body.as_bytes(), head);
    };
    // /api/models/{org}/{name}/revision/{rev}
    if segments.len() == 6
        && segments[0] == "api"
        && segments[1] == "models"
        && segments[4] == "revision"
    {
        let repo = format!("{}/{}", segments[2], segments[3]);
        if !state.repos.contains_key(repo.as_str()) {
            return not_found(&mut stream, "RepoNotFound", None);
        }
        let Some(rev) = find(&repo, &percent_decode(segments[5])) else {
            return not_found(&mut stream, "RevisionNotFound", None);
        };
        let siblings: Vec<serde_json::Value> = rev
            .files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "id": repo, "sha": rev.commit, "siblings": siblings });
        let body = serde_json::to_vec(&body).unwrap();
        return respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            &body,
            head,
        );
    }
    // /{org}/{name}/resolve/{rev}/{file...}
    if segments.len() >= 5 && segments[2] == "resolve" {
        let repo = format!("{}/{}", segments[0], segments[1]);
        let Some(rev) = find(&repo, &percent_decode(segments[3])) else {
            return not_found(&mut stream, "RevisionNotFound", None);
        };
        let file = segments[4..]
            .iter()
            .map(|s| percent_decode(s))
            .collect::<Vec<_>>()
            .join("/");
        if state.failing.contains(&file) {
            return respond(&mut stream, "500 Internal Server Error", &[], b"boom", head);
        }
        let Some(bytes) = rev.files.get(&file) else {
            return not_found(&mut stream, "EntryNotFound", Some(&rev.commit));
        };
        return respond(
            &mut stream,
            "200 OK",
            &[
                ("Content-Type", "application/octet-stream".into()),
                ("ETag", format!("\"{}\"", etag(bytes))),
                ("X-Repo-Commit", rev.commit.clone()),
            ],
            bytes,
            head,
        );
    }
    not_found(&mut stream, "NotFound", None)
}

/// The fixture checkpoint's files, with what finerank must leave behind beside them.
fn tiny_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        files.insert(
            name.to_string(),
            std::fs::read(fixture().join(name)).unwrap(),
        );
    }
    files.insert("README.md".into(), b"# tiny\n".to_vec());
    files.insert("pytorch_model.bin".into(), b"not a pickle".to_vec());
    files.insert("onnx/model.onnx".into(), b"not onnx".to_vec());
    files
}

/// `org/tiny`: the fixture at `main`, and at branch `v1` a commit whose config.json says so.
fn repos() -> Repos {
    let mut v1 = tiny_files();
    let mut config: serde_json::Value = serde_json::from_slice(&v1["config.json"]).unwrap();
    config["finerank_test_revision"] = "v1".into();
    v1.insert(
        "config.json".into(),
        serde_json::to_vec_pretty(&config).unwrap(),
    );
    let mut repos = Repos::new();
    repos.insert(
        "org/tiny",
        vec![
            Revision {
                name: "main",
                commit: commit(1),
                files: tiny_files(),
            },
            Revision {
                name: "v1",
                commit: commit(2),
                files: v1,
            },
        ],
    );
    repos
}

fn settings(cache: &Path, hub: &Hub) -> HubSettings {
    HubSettings {
        cache_dir: cache.to_path_buf(),
        endpoint: hub.endpoint(),
        token: None,
        offline: false,
    }
}

fn registry() -> (tempfile::TempDir, Registry) {
    let home = tempfile::tempdir().unwrap();
    let registry = Registry::open(home.path()).unwrap();
    (home, registry)
}

fn resolve(reference: &str, hub: &HubSettings) -> Result<PathBuf, String> {
    let (_home, registry) = registry();
    resolve_with(reference, &registry, hub)
        .map(|(name, dir)| {
            assert_eq!(name, reference);
            dir
        })
        .map_err(|e| e.to_string())
}

/// The files under a snapshot directory, relative to it.
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(files: &[&str]) -> BTreeSet<String> {
    files.iter().map(|s| s.to_string()).collect()
}

fn load(dir: &Path) -> Reranker {
    Reranker::load(
        "test",
        dir,
        &LoadOptions {
            device: DeviceChoice::Cpu,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// The files asked for (a HEAD for each; a GET unless an identical file's blob is cached).
fn fetched_files(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter()
        .filter(|s| ["HEAD", "GET"].contains(&s.method.as_str()) && s.path.contains("/resolve/"))
        .map(|s| s.path.splitn(6, '/').nth(5).unwrap().to_string())
        .collect()
}

#[test]
fn an_id_downloads_into_the_hf_cache_and_loads_as_the_checkpoint_does() {
    let hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let dir = resolve("org/tiny", &settings(cache.path(), &hub)).unwrap();

    let repo_dir = cache.path().join("models--org--tiny");
    assert_eq!(dir, repo_dir.join("snapshots").join(commit(1)));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        commit(1)
    );
    assert_eq!(
        listing(&dir),
        set(&[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ])
    );
    // The HF layout: snapshot entries point into blobs/.
    assert!(std::fs::symlink_metadata(dir.join("model.safetensors"))
        .unwrap()
        .file_type()
        .is_symlink());
    let seen = hub.seen();
    assert!(
        seen.iter().all(|s| !s.path.ends_with(".bin")
            && !s.path.ends_with("README.md")
            && !s.path.contains("onnx")),
        "{seen:#?}"
    );

    let docs = [
        "Paris is the capital of France.",
        "Bananas are yellow.",
        "The Seine flows through Paris.",
    ];
    let opts = ScoreOptions::default();
    let q = "what is the capital of france";
    assert_eq!(
        load(&dir).rerank(q, &docs, None, &opts),
        load(&fixture()).rerank(q, &docs, None, &opts)
    );
}

#[test]
fn a_cached_id_resolves_without_a_request() {
    let mut hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub);
    let dir = resolve("org/tiny", &online).unwrap();
    let requests = hub.seen().len();
    assert!(requests > 0);

    assert_eq!(resolve("org/tiny", &online).unwrap(), dir);
    assert_eq!(hub.seen().len(), requests, "{:#?}", &hub.seen()[requests..]);

    hub.stop();
    assert_eq!(resolve("org/tiny", &online).unwrap(), dir);
    let offline = HubSettings {
        offline: true,
        ..online
    };
    assert_eq!(resolve("org/tiny", &offline).unwrap(), dir);
    assert_eq!(hub.seen().len(), requests);
}

#[test]
fn offline_with_an_empty_cache_names_the_missing_files_where_they_go_and_the_command() {
    let hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let offline = HubSettings {
        offline: true,
        ..settings(cache.path(), &hub)
    };
    let err = resolve("org/tiny", &offline).unwrap_err();
    let repo_dir = cache.path().join("models--org--tiny");
    for needle in [
        "HF_HUB_OFFLINE",
        "Missing: config.json, tokenizer.json, model.safetensors",
        &format!("{}/<commit>/", repo_dir.join("snapshots").display()),
        &repo_dir.join("refs/main").display().to_string(),
        "`hf download org/tiny`",
        "`huggingface-cli download org/tiny`",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert!(hub.seen().is_empty(), "{:#?}", hub.seen());

    // With the commit known, the exact snapshot directory, and only what it lacks.
    let dir = resolve("org/tiny", &settings(cache.path(), &hub)).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let requests = hub.seen().len();
    let err = resolve("org/tiny", &offline).unwrap_err();
    assert!(err.contains("Missing: model.safetensors."), "{err}");
    assert!(
        err.contains(&format!("Put them in {} ", dir.display())),
        "{err}"
    );
    assert_eq!(hub.seen().len(), requests);

    // A revision other than main goes into the command.
    let err = resolve("org/tiny@v1", &offline).unwrap_err();
    assert!(
        err.contains("`hf download org/tiny --revision v1`"),
        "{err}"
    );
}

#[test]
fn a_failed_download_names_the_missing_files_and_the_snapshot() {
    let hub = Hub::start_failing(repos(), &["tokenizer.json"]);
    let cache = tempfile::tempdir().unwrap();
    let err = resolve("org/tiny", &settings(cache.path(), &hub)).unwrap_err();
    let snapshot = cache
        .path()
        .join("models--org--tiny/snapshots")
        .join(commit(1));
    // What failed and what was still to come; tokenizer_config.json came before.
    assert!(
        err.contains("Missing: tokenizer.json, config.json, model.safetensors."),
        "{err}"
    );
    assert!(snapshot.join("tokenizer_config.json").is_file());
    assert!(
        err.contains(&format!("Put them in {} ", snapshot.display())),
        "{err}"
    );
    assert!(err.contains("`hf download org/tiny`"), "{err}");
    assert!(
        err.contains(&hub.endpoint()) && err.contains("500"),
        "{err}"
    );
    // The commit is main's now, and its snapshot incomplete: offline, the same advice.
    let offline = HubSettings {
        offline: true,
        ..settings(cache.path(), &hub)
    };
    let err = resolve("org/tiny", &offline).unwrap_err();
    assert!(
        err.contains("Missing: config.json, tokenizer.json, model.safetensors."),
        "{err}"
    );
    assert!(
        err.contains(&format!("Put them in {} ", snapshot.display())),
        "{err}"
    );

    // The Hub unreachable altogether, with nothing cached: no commit known.
    let cache = tempfile::tempdir().unwrap();
    let mut gone = Hub::start(repos());
    let unreachable = settings(cache.path(), &gone);
    gone.stop();
    let err = resolve("org/tiny", &unreachable).unwrap_err();
    assert!(
        err.contains("Missing: config.json, tokenizer.json, model.safetensors"),
        "{err}"
    );
    assert!(err.contains("snapshots/<commit>/"), "{err}");
}

#[test]
fn a_revision_other_than_main() {
    let hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub);
    let repo_dir = cache.path().join("models--org--tiny");

    let dir = resolve("org/tiny@v1", &online).unwrap();
    assert_eq!(dir, repo_dir.join("snapshots").join(commit(2)));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/v1")).unwrap(),
        commit(2)
    );
    assert!(!repo_dir.join("refs/main").exists());
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("finerank_test_revision"), "{config}");
    assert!(
        hub.seen()
            .iter()
            .any(|s| s.path == "/api/models/org/tiny/revision/v1"),
        "{:#?}",
        hub.seen()
    );

    // A commit hash is its own snapshot; no ref is written for it.
    let by_hash = resolve(&format!("org/tiny@{}", commit(1)), &online).unwrap();
    assert_eq!(by_hash, repo_dir.join("snapshots").join(commit(1)));
    assert!(!repo_dir.join("refs").join(commit(1)).exists());
    let main_config = std::fs::read_to_string(by_hash.join("config.json")).unwrap();
    assert!(!main_config.contains("finerank_test_revision"));

    // Both are cached now.
    let offline = HubSettings {
        offline: true,
        ..online
    };
    assert_eq!(resolve("org/tiny@v1", &offline).unwrap(), dir);
    assert_eq!(
        resolve(&format!("org/tiny@{}", commit(1)), &offline).unwrap(),
        by_hash
    );

    let err = resolve("org/tiny@v9", &offline).unwrap_err();
    assert!(err.contains("refs/v9"), "{err}");
    let online = HubSettings {
        offline: false,
        ..offline
    };
    let err = resolve("org/tiny@v9", &online).unwrap_err();
    assert!(err.contains("no revision \"v9\""), "{err}");
}

#[test]
fn pytorch_only_and_sharded_repositories_are_refused_clearly() {
    let mut files = tiny_files();
    files.remove("model.safetensors");
    let mut sharded = tiny_files();
    sharded.remove("model.safetensors");
    sharded.remove("pytorch_model.bin");
    sharded.insert(
        "model.safetensors.index.json".into(),
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"total_size": 8},
            "weight_map": {
                "embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
                "embeddings.position_embeddings.weight": "model-00002-of-00002.safetensors",
                "classifier.weight": "model-00002-of-00002.safetensors",
            }
        }))
        .unwrap(),
    );
    sharded.insert(
        "model-00001-of-00002.safetensors".into(),
        b"shard one".to_vec(),
    );
    sharded.insert(
        "model-00002-of-00002.safetensors".into(),
        b"shard two".to_vec(),
    );
    let mut repos = Repos::new();
    repos.insert(
        "org/bin-only",
        vec![Revision {
            name: "main",
            commit: commit(3),
            files,
        }],
    );
    repos.insert(
        "org/sharded",
        vec![Revision {
            name: "main",
            commit: commit(4),
            files: sharded,
        }],
    );
    let hub = Hub::start(repos);
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub);

    let err = resolve("org/bin-only", &online).unwrap_err();
    for needle in [
        "pytorch_model.bin",
        "safetensors only",
        "save_pretrained",
        "refs/pr/",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert!(
        hub.seen().iter().all(|s| !s.path.contains("/resolve/")),
        "nothing is downloaded: {:#?}",
        hub.seen()
    );

    let err = resolve("org/sharded", &online).unwrap_err();
    let snapshot = cache
        .path()
        .join("models--org--sharded/snapshots")
        .join(commit(4));
    for needle in [
        "sharded safetensors checkpoint",
        "model.safetensors.index.json and 2 shards",
        "reads a single model.safetensors",
        &snapshot.display().to_string(),
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    // The shards were fetched, so the refusal stands offline too.
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot.join(shard).is_file(), "{shard}");
    }
    let offline = HubSettings {
        offline: true,
        ..online
    };
    let again = resolve("org/sharded", &offline).unwrap_err();
    assert!(again.contains("sharded safetensors checkpoint"), "{again}");
}

#[test]
fn a_token_is_sent_as_a_bearer_header() {
    let hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let with_token = HubSettings {
        token: Some("hf_fixture_token".into()),
        ..settings(cache.path(), &hub)
    };
    resolve("org/tiny", &with_token).unwrap();
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.path.starts_with("/api/models/")));
    assert!(seen.iter().any(|s| s.path.contains("/resolve/")));
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some("Bearer hf_fixture_token"),
            "{s:?}"
        );
    }
}

#[test]
fn sentence_transformers_files_come_along_and_pickles_stay_behind() {
    let mut files = tiny_files();
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    files.insert(
        "modules.json".into(),
        json(serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        ])),
    );
    for name in [
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "special_tokens_map.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
    ] {
        files.insert(name.into(), b"{}".to_vec());
    }
    files.insert("2_Dense/model.safetensors".into(), b"dense".to_vec());
    files.insert("2_Dense/pytorch_model.bin".into(), b"pickle".to_vec());
    files.insert("3_Other/config.json".into(), b"{}".to_vec());
    let mut repos = Repos::new();
    repos.insert(
        "org/st",
        vec![Revision {
            name: "main",
            commit: commit(5),
            files,
        }],
    );
    let hub = Hub::start(repos);
    let cache = tempfile::tempdir().unwrap();
    let dir = resolve("org/st", &settings(cache.path(), &hub)).unwrap();
    let expected = set(&[
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
    ]);
    assert_eq!(listing(&dir), expected);
    assert_eq!(fetched_files(&hub.seen()), expected);
}

#[test]
fn a_local_directory_wins_over_a_hub_id_of_the_same_name() {
    let hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    // Relative to the working directory, as a user would type it; removed however the test ends.
    let org = tempfile::Builder::new()
        .prefix("hubtest")
        .tempdir_in(".")
        .unwrap();
    let local = org.path().join("tiny");
    std::fs::create_dir(&local).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), local.join(f)).unwrap();
    }
    let reference = format!("{}/tiny", org.path().file_name().unwrap().to_str().unwrap());
    let dir = resolve(&reference, &settings(cache.path(), &hub)).unwrap();
    assert_eq!(dir, Path::new(&reference));
    assert!(hub.seen().is_empty(), "{:#?}", hub.seen());

    // A directory without config.json is still the directory, and not a checkpoint.
    std::fs::remove_file(local.join("config.json")).unwrap();
    let err = resolve(&reference, &settings(cache.path(), &hub)).unwrap_err();
    assert!(err.contains("without config.json"), "{err}");
    assert!(hub.seen().is_empty(), "{:#?}", hub.seen());
}

#[test]
fn an_unknown_repository_or_name_says_so() {
    let hub = Hub::start(repos());
    let cache = tempfile::tempdir().unwrap();
    let online = settings(cache.path(), &hub);
    let err = resolve("org/nothing-here", &online).unwrap_err();
    for needle in [
        "no local directory",
        "no model repository org/nothing-here",
        "HF_TOKEN",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    // A bare name is no Hub id: no request, the usual list of what --model takes.
    let requests = hub.seen().len();
    let err = resolve("tiny", &online).unwrap_err();
    assert!(
        err.contains("unknown model") && err.contains("org/name"),
        "{err}"
    );
    assert_eq!(hub.seen().len(), requests);
}

#[test]
fn settings_come_from_the_variables_the_python_tools_read() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
    let vars = |pairs: &[(&str, &str)]| {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubSettings::from_vars(move |name| map.get(name).cloned())
    };
    let h = home.path().to_str().unwrap();

    let s = vars(&[("HF_HOME", h)]);
    assert_eq!(s.cache_dir, home.path().join("hub"));
    assert_eq!(s.endpoint, "https://huggingface.co");
    assert_eq!(s.token.as_deref(), Some("hf_from_file"));
    assert!(!s.offline);

    let s = vars(&[
        ("HF_HOME", h),
        ("HF_HUB_CACHE", "/elsewhere"),
        ("HF_ENDPOINT", "http://127.0.0.1:1/"),
        ("HF_TOKEN", "hf_from_env"),
        ("HF_HUB_OFFLINE", "1"),
    ]);
    assert_eq!(s.cache_dir, Path::new("/elsewhere"));
    assert_eq!(s.endpoint, "http://127.0.0.1:1");
    assert_eq!(s.token.as_deref(), Some("hf_from_env"));
    assert!(s.offline);
    assert!(!format!("{s:?}").contains("hf_from_env"), "{s:?}");

    let s = vars(&[("HOME", "/home/u"), ("HF_HUB_OFFLINE", "0")]);
    assert_eq!(s.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
    assert!(!s.offline);
    let s = vars(&[("HF_HOME", h), ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")]);
    assert_eq!(s.token, None);
}
