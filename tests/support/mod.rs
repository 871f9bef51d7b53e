//! Drives the real binary: certificates from `extsvc-guard certs`, `extsvc-guard serve` on
//! ephemeral loopback ports, and HTTPS clients that trust only the generated CA.
#![allow(dead_code)]

pub mod load;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_extsvc-guard");

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs `extsvc-guard certs --out dir` plus `extra` arguments.
pub fn make_certs(dir: &Path, extra: &[&str]) {
    let out = Command::new(BIN)
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `extsvc-guard serve --no-cluster` with the certificates in `dir`, plus `extra`
/// arguments and `env`, until it exits: for the ways it refuses to start.
pub fn serve_refused(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .arg("serve")
        .args([
            "--no-cluster",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Kills a child process if this test process ends first — killed with SIGKILL included,
/// where no destructor runs: a `sh` whose stdin is a pipe from this process reads EOF when
/// the process ends, and then kills the child, unless [`Reaper::release`] told it "done"
/// first. The pid is checked to still be an extsvc-guard before the kill.
pub struct Reaper {
    watchdog: Child,
    stdin: Option<std::process::ChildStdin>,
}

const REAPER: &str = r#"
trap '' INT TERM HUP
read line || true
if [ "$line" != done ] && grep -q extsvc-guard "/proc/$1/cmdline" 2>/dev/null; then
  kill -KILL "$1"
fi
"#;

impl Reaper {
    pub fn watch(pid: u32) -> Reaper {
        let mut watchdog = Command::new("sh")
            .args(["-c", REAPER, "sh", &pid.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let stdin = watchdog.stdin.take();
        Reaper { watchdog, stdin }
    }

    /// The child has been reaped: the watchdog leaves without killing.
    pub fn release(&mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = self.watchdog.wait();
        }
    }
}

impl Drop for Reaper {
    /// Not released (a panic before the child was reaped): the child is killed.
    fn drop(&mut self) {
        if let Some(stdin) = self.stdin.take() {
            drop(stdin);
            let _ = self.watchdog.wait();
        }
    }
}

/// A running `extsvc-guard serve`, killed when dropped (and when the test process ends).
pub struct Server {
    pub child: Child,
    reaper: Reaper,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with fresh certificates in a temporary directory.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path(), &[]);
        Server::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--log-format", "json", "--reload-interval", "100ms"])
            // Never the developer's own cluster: a test names its API server (a real or a fake one).
            .args(if extra.contains(&"--kubeconfig") {
                &[][..]
            } else {
                &["--no-cluster"][..]
            })
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let reaper = Reaper::watch(child.id());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listening = logs.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "admission webhook listening").then(|| {
                    (
                        v["addr"].as_str().unwrap().parse().unwrap(),
                        v["metrics_addr"].as_str().unwrap().parse().unwrap(),
                    )
                })
            });
            if let Some((addr, metrics_addr)) = listening {
                return Server {
                    child,
                    reaper,
                    addr,
                    metrics_addr,
                    dir,
                    logs,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited with {status}: {:#?}", logs.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.reaper.release();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:#?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaper.release();
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A rustls client configuration that trusts only `ca` and offers `alpn`.
pub fn client_tls(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    One,
    Two,
}

/// An HTTPS client trusting only `ca`, speaking exactly `http`.
pub fn client(ca: &Path, http: Http) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    let builder = match http {
        Http::One => builder
            .use_preconfigured_tls(client_tls(ca, &[b"http/1.1"]))
            .http1_only(),
        Http::Two => builder
            .use_preconfigured_tls(client_tls(ca, &[b"h2"]))
            .http2_prior_knowledge(),
    };
    builder.build().unwrap()
}

/// The answer to one POST.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub version: reqwest::Version,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Answer {
    post_with(client, url, body, "application/json").await
}

pub async fn post_with(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Answer {
    let response = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let version = response.version();
    let body = response.bytes().await.unwrap().to_vec();
    Answer {
        status,
        version,
        body,
    }
}

/// The leaf certificate a fresh connection is served.
pub async fn served_certificate(server: &Server) -> Vec<u8> {
    let client = client(&server.ca(), Http::One);
    let response = client.get(server.url("/nothing")).send().await.unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    info.peer_certificate().unwrap().to_vec()
}

/// Wraps `object` in an AdmissionReview request as the API server sends it.
pub fn review(uid: &str, operation: &str, object: &serde_json::Value) -> Vec<u8> {
    let kind = object["kind"].as_str().unwrap_or("");
    let (group, version) = match object["apiVersion"]
        .as_str()
        .unwrap_or("v1")
        .split_once('/')
    {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap_or("v1").to_owned(),
        ),
    };
    let resource = match kind {
        "Service" => "services",
        "Endpoints" => "endpoints",
        "EndpointSlice" => "endpointslices",
        _ => "others",
    };
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let (new, old) = match operation {
        "DELETE" => (serde_json::Value::Null, object.clone()),
        _ => (object.clone(), serde_json::Value::Null),
    };
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "developer", "groups": ["system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}
