//! A real Kubernetes control plane for tests, by the envtest convention: the directory named
//! by `KUBEBUILDER_ASSETS` holds `etcd`, `kube-apiserver` and `kubectl` (and, optionally,
//! `kube-controller-manager`). One etcd and one kube-apiserver are started on free loopback
//! ports the first time a test asks for them, and shared by every test of the binary; tests
//! keep apart by working in namespaces of their own and registering webhook configurations
//! of their own, scoped to those namespaces. kube-controller-manager is started on demand,
//! by the first test that needs controllers.
//!
//! Nothing outlives the test binary. Statics are never dropped, so no server may depend on
//! a destructor: each one runs under a small `sh` watchdog whose standard input is a pipe
//! from this process. When this process ends — normally, by a panic, or killed with
//! SIGKILL — the kernel closes the pipe, the watchdog reads EOF, terminates its server (KILL
//! after 2 s) and removes its data. `extsvc-guard serve` started by a test is guarded the
//! same way (`support::Server`).
//!
//! Without `KUBEBUILDER_ASSETS` every real-server test prints one line saying how to enable
//! it and returns; with `EXTSVC_GUARD_REQUIRE_ENVTEST=1` that is a failure instead. With the
//! assets given, a control plane that does not start fails every test that needs it. When
//! `EXTSVC_GUARD_ENVTEST_REPORT` names a file, each test appends `ran <test>` or
//! `skipped <test>` to it, so CI can count them.
#![allow(dead_code)]

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

use crate::support::Server;

pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
pub const REQUIRE_ENV: &str = "EXTSVC_GUARD_REQUIRE_ENVTEST";
pub const REPORT_ENV: &str = "EXTSVC_GUARD_ENVTEST_REPORT";

/// How long kube-apiserver (and the controller manager) may take to become ready. About
/// 3.5 s on an idle 2-core machine; far more while cargo builds beside it.
const START_LIMIT: Duration = Duration::from_secs(90);

/// The shared control plane, or why it could not start.
static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Taken shared by every real-server test, exclusively by a test whose webhook
/// configuration is cluster-wide (as `deploy/` installs it), so that it judges no other
/// test's writes and no other test meets it.
static CLUSTER_WIDE: RwLock<()> = RwLock::new(());

/// The control plane for the calling test, or `None` when real-server tests are not enabled
/// (after printing why). Panics when they are enabled and it cannot start.
pub fn control_plane() -> Option<Session> {
    let guard = CLUSTER_WIDE.read().unwrap_or_else(PoisonError::into_inner);
    shared(false).map(|cp| Session {
        cp,
        _lock: Lock::Shared(guard),
    })
}

/// As [`control_plane`], with kube-controller-manager running. Without it in the assets
/// the test is skipped (a failure with `EXTSVC_GUARD_REQUIRE_ENVTEST=1`).
pub fn control_plane_with_controllers() -> Option<Session> {
    let guard = CLUSTER_WIDE.read().unwrap_or_else(PoisonError::into_inner);
    let cp = shared(true)?;
    cp.controller_manager();
    Some(Session {
        cp,
        _lock: Lock::Shared(guard),
    })
}

/// As [`control_plane`], for a test that registers a cluster-wide webhook configuration:
/// no other real-server test runs meanwhile.
pub fn control_plane_alone() -> Option<Session> {
    let guard = CLUSTER_WIDE.write().unwrap_or_else(PoisonError::into_inner);
    shared(false).map(|cp| Session {
        cp,
        _lock: Lock::Exclusive(guard),
    })
}

fn shared(needs_controllers: bool) -> Option<&'static ControlPlane> {
    let test = current_test();
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    let skip = |why: &str| {
        if required {
            panic!("{REQUIRE_ENV}=1 but {why}");
        }
        record("skipped", &test);
        // Straight to the file descriptor, in one write: libtest captures eprintln! of
        // passing tests.
        let _ = std::io::stderr().write_all(format!("{test}: skipped: {why}\n").as_bytes());
    };
    let Some(assets) = std::env::var_os(ASSETS_ENV).filter(|a| !a.is_empty()) else {
        skip(&format!(
            "real API server tests need {ASSETS_ENV}=<dir with kube-apiserver, etcd, kubectl> (see README, Testing)"
        ));
        return None;
    };
    if needs_controllers && !Path::new(&assets).join("kube-controller-manager").is_file() {
        skip(&format!(
            "this test needs kube-controller-manager in {ASSETS_ENV}={}",
            Path::new(&assets).display()
        ));
        return None;
    }
    let started = CONTROL_PLANE.get_or_init(|| ControlPlane::start(PathBuf::from(assets)));
    match started {
        Ok(cp) => {
            record("ran", &test);
            Some(cp)
        }
        Err(e) => panic!("the control plane did not start: {e}"),
    }
}

/// The running test's name: libtest names each test's thread after it.
fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned()
}

fn record(what: &str, test: &str) {
    let Some(path) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {REPORT_ENV} {path:?}: {e}"));
    // One write per line: appends from parallel tests do not interleave.
    file.write_all(format!("{what} {test}\n").as_bytes())
        .unwrap();
}

enum Lock {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// A test's hold on the control plane; derefs to it.
pub struct Session {
    cp: &'static ControlPlane,
    _lock: Lock,
}

impl std::ops::Deref for Session {
    type Target = ControlPlane;
    fn deref(&self) -> &ControlPlane {
        self.cp
    }
}

// ---------------------------------------------------------------------------------------
// Processes under a watchdog

/// The watchdog: runs the server with its stdin from /dev/null, prints its pid, waits for EOF on its own
/// stdin (this process ending, or [`Watched::stop`]), then terminates the server, KILLs it
/// after 2 s, and removes `$CLEAN` (when set). (kube-apiserver stops listening at once on
/// SIGTERM, then may wait many seconds for its watches to drain: nothing a test needs.) It ignores INT, TERM and HUP itself: a
/// Ctrl-C of `cargo test` reaches the whole process group, and the watchdog must outlive
/// its server to clean up after it. (A non-interactive shell's background job ignores
/// SIGINT, so the server is ended by the watchdog's TERM.) An unreaped child's pid cannot
/// be reused, so the final KILL can only hit the server.
const WATCHDOG: &str = r#"
"$@" </dev/null >>"$LOG" 2>&1 &
pid=$!
echo "$pid"
trap '' INT TERM HUP
read _ || true
kill -TERM "$pid" 2>/dev/null
i=0
while [ "$i" -lt 20 ]; do
  state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
  sleep 0.1
  i=$((i + 1))
done
kill -KILL "$pid" 2>/dev/null
wait "$pid"
if [ -n "$CLEAN" ]; then rm -rf "$CLEAN"; fi
"#;

/// A server process under a watchdog.
pub struct Watched {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    clean: Option<PathBuf>,
    watchdog: Option<(Child, ChildStdin)>,
    /// The server's pid (the watchdog's child: while the watchdog runs it cannot be reused).
    pid: u32,
}

impl Watched {
    fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Watched {
        Watched {
            name: name.to_owned(),
            program,
            args,
            log,
            clean: None,
            watchdog: None,
            pid: 0,
        }
    }

    /// Starts (or starts again) the server.
    fn start(&mut self) -> Result<(), String> {
        assert!(self.watchdog.is_none(), "{} is running", self.name);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&self.program)
            .args(&self.args)
            .env("LOG", &self.log)
            .env("CLEAN", self.clean.as_deref().unwrap_or(Path::new("")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start sh for {}: {e}", self.name))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut pid = String::new();
        let _ =
            std::io::BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut pid);
        self.watchdog = Some((child, stdin));
        self.pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("the watchdog of {} printed no pid: {pid:?}", self.name))?;
        Ok(())
    }

    /// Stops the server and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Whether the server has ended (a zombie until its watchdog reaps it).
    fn exited(&mut self) -> bool {
        let Some((watchdog, _)) = &mut self.watchdog else {
            return true;
        };
        if !matches!(watchdog.try_wait(), Ok(None)) {
            return true;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid));
        // The state follows the command name, which is in parentheses.
        stat.map_or(true, |s| {
            s.rsplit(") ")
                .next()
                .is_some_and(|rest| rest.starts_with('Z'))
        })
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1 (free when asked; the server binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ---------------------------------------------------------------------------------------
// Certificates

/// What the control plane's TLS is made of, all by rcgen.
pub struct Pki {
    pub ca_pem: String,
    ca: Issuer<'static, KeyPair>,
    front_proxy_ca_pem: String,
    front_proxy_ca: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    server: bool,
) -> Pair {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if server {
        params.subject_alt_names = vec![
            SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    fn new() -> Pki {
        let (ca_pem, ca) = new_ca("extsvc-guard-envtest-ca");
        let (front_proxy_ca_pem, front_proxy_ca) = new_ca("extsvc-guard-envtest-front-proxy-ca");
        Pki {
            ca_pem,
            ca,
            front_proxy_ca_pem,
            front_proxy_ca,
        }
    }

    /// A serving certificate for 127.0.0.1 and localhost.
    pub fn serving(&self, name: &str) -> Pair {
        leaf(&self.ca, name, None, true)
    }

    /// A client certificate: the user `user` in group `group`.
    pub fn client(&self, user: &str, group: Option<&str>) -> Pair {
        leaf(&self.ca, user, group, false)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------
// The control plane

pub struct ControlPlane {
    /// The directory named by KUBEBUILDER_ASSETS.
    pub assets: PathBuf,
    /// Everything the control plane writes: certificates, kubeconfigs, etcd's data, logs,
    /// and the tests' scratch directories ([`ControlPlane::tempdir`]). Removed by etcd's
    /// watchdog when the test binary ends.
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// An admin kubeconfig (a client certificate in group system:masters).
    pub kubeconfig: PathBuf,
    pub pki: Pki,
    admin: Pair,
    etcd_url: String,
    sa_key: PathBuf,
    etcd: Mutex<Watched>,
    apiserver: Mutex<Watched>,
    controller_manager: OnceLock<Result<Mutex<Watched>, String>>,
    counter: AtomicUsize,
}

/// A required asset, or why it is unusable.
fn asset(assets: &Path, name: &str) -> Result<PathBuf, String> {
    let path = assets.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        Ok(_) => Err(format!("{} is not a file", path.display())),
        Err(e) => Err(format!(
            "{ASSETS_ENV}={} has no {name} ({e}): it must hold kube-apiserver, etcd and kubectl (setup-envtest use -p path 1.32.x prints such a directory)",
            assets.display()
        )),
    }
}

impl ControlPlane {
    fn start(assets: PathBuf) -> Result<ControlPlane, String> {
        crate::support::install_crypto();
        for name in ["kube-apiserver", "etcd", "kubectl"] {
            asset(&assets, name)?;
        }
        // A directory nothing removes but etcd's watchdog (statics are never dropped).
        let dir = tempfile::Builder::new()
            .prefix("extsvc-guard-envtest-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?
            .keep();
        let pki = Pki::new();
        let file = |name: &str| dir.join(name);
        write(&file("ca.crt"), &pki.ca_pem);
        write(&file("front-proxy-ca.crt"), &pki.front_proxy_ca_pem);
        let serving = pki.serving("kube-apiserver");
        write(&file("apiserver.crt"), &serving.cert_pem);
        write(&file("apiserver.key"), &serving.key_pem);
        let proxy = leaf(&pki.front_proxy_ca, "front-proxy-client", None, false);
        write(&file("front-proxy-client.crt"), &proxy.cert_pem);
        write(&file("front-proxy-client.key"), &proxy.key_pem);
        // Service account tokens are signed with this key (ES256) and checked with it.
        let sa_key = KeyPair::generate().unwrap();
        write(&file("sa.key"), &sa_key.serialize_pem());
        write(&file("sa.pub"), &sa_key.public_key_pem());

        // etcd first: its watchdog also removes the whole directory at the end.
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Watched::new(
            "etcd",
            asset(&assets, "etcd")?,
            vec![
                format!("--data-dir={}", file("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
            ],
            file("etcd.log"),
        );
        etcd.clean = Some(dir.clone());
        etcd.start()?;

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let admin = pki.client("extsvc-guard-test-admin", Some("system:masters"));
        let kubeconfig = file("admin.kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(&url, &pki.ca_pem, Credential::Cert(&admin)),
        );
        let apiserver = Watched::new(
            "kube-apiserver",
            asset(&assets, "kube-apiserver")?,
            apiserver_args(&dir, port, &etcd_url),
            file("kube-apiserver.log"),
        );
        let cp = ControlPlane {
            assets,
            dir: dir.clone(),
            url,
            kubeconfig,
            pki,
            admin,
            etcd_url,
            sa_key: file("sa.key"),
            etcd: Mutex::new(etcd),
            apiserver: Mutex::new(apiserver),
            controller_manager: OnceLock::new(),
            counter: AtomicUsize::new(0),
        };
        let started = Instant::now();
        cp.wait_etcd()?;
        {
            let mut apiserver = cp.apiserver.lock().unwrap();
            apiserver.start()?;
            cp.wait_ready(&mut apiserver, port, "/readyz")?;
        }
        let _ = writeln!(
            std::io::stderr().lock(),
            "envtest: etcd and kube-apiserver ready at {} in {:.1}s ({})",
            cp.url,
            started.elapsed().as_secs_f64(),
            cp.dir.display()
        );
        Ok(cp)
    }

    fn wait_etcd(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        let addr = self.etcd_url.trim_start_matches("http://").to_owned();
        loop {
            let answer = TcpStream::connect(&addr).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            });
            if answer.is_ok_and(|t| t.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            let mut etcd = self.etcd.lock().unwrap();
            if etcd.exited() || Instant::now() > deadline {
                return Err(format!(
                    "etcd did not become healthy at {}:\n{}",
                    self.etcd_url,
                    etcd.log_tail()
                ));
            }
            drop(etcd);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `path` on a server of ours until it answers 200 `ok`.
    fn wait_ready(&self, server: &mut Watched, port: u16, path: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let last = match self.get(port, path) {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => e,
            };
            if server.exited() || Instant::now() > deadline {
                return Err(format!(
                    "{} did not become ready (GET {path}: {last}):\n{}",
                    server.name,
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET over TLS as the admin, blocking: (status, body).
    fn get(&self, port: u16, path: &str) -> Result<(u16, String), String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let admin = &self.admin;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(admin.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(admin.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut text = Vec::new();
        // A server closing without close_notify still gave us its answer.
        let _ = tls.read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text);
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        Ok((code, body))
    }

    /// A second kube-apiserver on the same etcd, on a port of its own, ready: an API server
    /// a test may stop and restart without taking the shared one away from the other tests
    /// (writes through either are seen by both). Stopped when dropped.
    pub fn extra_apiserver(&self) -> ApiServer<'_> {
        let mut api = self.extra_apiserver_unstarted();
        api.restart();
        api
    }

    /// [`ControlPlane::extra_apiserver`], not started yet: its port and kubeconfig exist,
    /// nothing answers until [`ApiServer::restart`].
    pub fn extra_apiserver_unstarted(&self) -> ApiServer<'_> {
        let port = free_port();
        let server = Watched::new(
            "kube-apiserver (extra)",
            self.assets.join("kube-apiserver"),
            apiserver_args(&self.dir, port, &self.etcd_url),
            self.dir.join(format!("kube-apiserver-{port}.log")),
        );
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = self.dir.join(format!("admin-{port}.kubeconfig"));
        write(
            &kubeconfig,
            &kubeconfig_yaml(&url, &self.pki.ca_pem, Credential::Cert(&self.admin)),
        );
        ApiServer {
            cp: self,
            server,
            port,
            url,
            kubeconfig,
        }
    }

    /// Starts kube-controller-manager (once; it then runs for every test), or panics saying
    /// why it cannot. Its controllers write Endpoints and EndpointSlices for selector
    /// Services, mirror hand-written Endpoints into EndpointSlices, and delete namespaces.
    pub fn controller_manager(&self) {
        let started = self.controller_manager.get_or_init(|| {
            let binary = asset(&self.assets, "kube-controller-manager")?;
            let file = |name: &str| self.dir.join(name);
            let client = self.pki.client("system:kube-controller-manager", None);
            let kubeconfig = file("controller-manager.kubeconfig");
            write(
                &kubeconfig,
                &kubeconfig_yaml(&self.url, &self.pki.ca_pem, Credential::Cert(&client)),
            );
            let serving = self.pki.serving("kube-controller-manager");
            write(&file("controller-manager.crt"), &serving.cert_pem);
            write(&file("controller-manager.key"), &serving.key_pem);
            let port = free_port();
            let kubeconfig = kubeconfig.display().to_string();
            let mut kcm = Watched::new(
                "kube-controller-manager",
                binary,
                vec![
                    format!("--kubeconfig={kubeconfig}"),
                    format!("--authentication-kubeconfig={kubeconfig}"),
                    format!("--authorization-kubeconfig={kubeconfig}"),
                    "--bind-address=127.0.0.1".to_owned(),
                    format!("--secure-port={port}"),
                    format!(
                        "--tls-cert-file={}",
                        file("controller-manager.crt").display()
                    ),
                    format!(
                        "--tls-private-key-file={}",
                        file("controller-manager.key").display()
                    ),
                    "--controllers=*".to_owned(),
                    "--use-service-account-credentials=true".to_owned(),
                    format!(
                        "--service-account-private-key-file={}",
                        self.sa_key.display()
                    ),
                    format!("--root-ca-file={}", file("ca.crt").display()),
                    "--leader-elect=false".to_owned(),
                ],
                file("kube-controller-manager.log"),
            );
            kcm.start()?;
            let started = Instant::now();
            self.wait_ready(&mut kcm, port, "/healthz")?;
            let _ = writeln!(
                std::io::stderr().lock(),
                "envtest: kube-controller-manager ready in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(Mutex::new(kcm))
        });
        if let Err(e) = started {
            panic!("kube-controller-manager did not start: {e}");
        }
    }

    /// A scratch directory inside the control plane's, removed with it at the latest.
    pub fn tempdir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(&self.dir).unwrap()
    }

    /// A number unique within this test binary, for names.
    pub fn unique(&self) -> usize {
        self.counter.fetch_add(1, Ordering::SeqCst)
    }

    /// The real kubectl of the assets, as the admin (unless `args` name another
    /// `--kubeconfig`), with `stdin` as its input.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_in(None, args, stdin)
    }

    /// [`ControlPlane::kubectl`] run in `dir`, so that file names print as the user typed them.
    pub fn kubectl_in(&self, dir: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(self.assets.join("kubectl"));
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // Discovery cache inside the control plane's directory, not in ~/.kube.
            .env("KUBECACHEDIR", self.dir.join("kubectl-cache"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_owned();
            // Written from a thread: a large input must not dead-lock against kubectl's output.
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Applies a JSON or YAML document as the admin.
    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl_ok(&["apply", "-f", "-"], Some(manifest))
    }

    /// Creates namespace `name` (a name the test alone uses) with `labels`.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        self.kubectl_ok(
            &["create", "-f", "-"],
            Some(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
                    .to_string(),
            ),
        );
        name.to_owned()
    }

    /// An admin kube client (in the calling test's runtime).
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// A kubeconfig that authenticates with a token of ServiceAccount `namespace/name`
    /// (from `kubectl create token`), in a file of `dir`.
    pub fn token_kubeconfig(&self, namespace: &str, name: &str, dir: &Path) -> PathBuf {
        let token = self.kubectl_ok(
            &["create", "token", name, "-n", namespace, "--duration=2h"],
            None,
        );
        let path = dir.join(format!("{namespace}-{name}.kubeconfig"));
        write(
            &path,
            &kubeconfig_yaml(&self.url, &self.pki.ca_pem, Credential::Token(token.trim())),
        );
        path
    }

    /// Registers `server` for `namespaces` with the webhook configurations of `deploy/base`
    /// (same rules, failure policies, timeouts and matchConditions: the default policy's),
    /// renamed to `name`, with `clientConfig` swapped to the server's URL and caBundle, and
    /// the namespaceSelector narrowed to `namespaces`; then waits until the API server calls
    /// it. Removed when the returned value is dropped.
    pub fn register(&self, server: &Server, name: &str, namespaces: &[&str]) -> Webhooks<'_> {
        self.register_edited(server, name, namespaces, |_| {})
    }

    /// [`ControlPlane::register`], with the matchConditions and the mutating webhook's rules
    /// that `extsvc-guard policy match-conditions POLICY` prints for `policy`, as a user
    /// installs them with a policy of their own.
    pub fn register_for_policy(
        &self,
        server: &Server,
        name: &str,
        namespaces: &[&str],
        policy: &Path,
    ) -> Webhooks<'_> {
        let out = Command::new(crate::support::BIN)
            .args(["policy", "match-conditions"])
            .arg(policy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let component: Value =
            serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let mut configurations = base_configurations();
        for patch in component["patches"].as_array().unwrap() {
            let ops: json_patch::Patch =
                serde_saphyr::from_str(patch["patch"].as_str().unwrap()).unwrap();
            let kind = &patch["target"]["kind"];
            for configuration in configurations.iter_mut().filter(|c| &c["kind"] == kind) {
                json_patch::patch(configuration, &ops).unwrap();
            }
        }
        self.register_configurations(server, name, namespaces, configurations, |_| {})
    }

    /// [`ControlPlane::register`], with each webhook (validating and mutating) changed by
    /// `edit` before it is applied.
    pub fn register_edited(
        &self,
        server: &Server,
        name: &str,
        namespaces: &[&str],
        edit: impl Fn(&mut Value),
    ) -> Webhooks<'_> {
        self.register_configurations(server, name, namespaces, base_configurations(), edit)
    }

    fn register_configurations(
        &self,
        server: &Server,
        name: &str,
        namespaces: &[&str],
        mut configurations: Vec<Value>,
        edit: impl Fn(&mut Value),
    ) -> Webhooks<'_> {
        let mut mutates_services = false;
        for configuration in &mut configurations {
            configuration["metadata"]["name"] = json!(name);
            let mutating = configuration["kind"] == "MutatingWebhookConfiguration";
            for webhook in configuration["webhooks"].as_array_mut().unwrap() {
                let path = webhook["clientConfig"]["service"]["path"].clone();
                webhook["clientConfig"] = server_client_config(server, path.as_str().unwrap());
                webhook["namespaceSelector"]["matchExpressions"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}));
                edit(webhook);
                mutates_services |= mutating
                    && webhook["rules"].as_array().into_iter().flatten().any(|r| {
                        r["resources"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|x| x == "services")
                    });
            }
        }
        let webhooks = Webhooks {
            cp: self,
            name: name.to_owned(),
        };
        self.apply(
            &json!({"apiVersion": "v1", "kind": "List", "items": configurations}).to_string(),
        );
        self.wait_called(server, namespaces[0], mutates_services);
        webhooks
    }

    /// Waits until the API server sends a dry-run create in `namespace` to `server` for
    /// validation, and for mutation when `mutate` (it picks up webhook configurations
    /// asynchronously).
    pub fn wait_called(&self, server: &Server, namespace: &str, mutate: bool) {
        let probe = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": PROBE, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "probe.example.com"}
        })
        .to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        let probed = |path: &str| {
            server.logs().iter().any(|l| {
                l.contains("\"message\":\"decision\"")
                    && l.contains(&format!("\"path\":\"{path}\""))
                    && l.contains(&format!("\"namespace\":\"{namespace}\""))
                    && l.contains(&format!("\"name\":\"{PROBE}\""))
            })
        };
        loop {
            self.kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&probe));
            if probed("/validate") && (!mutate || probed("/mutate")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the API server never called the webhook for namespace {namespace}: {:#?}",
                server.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The webhook configurations of `deploy/base/webhooks.yaml`.
fn base_configurations() -> Vec<Value> {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/webhooks.yaml"),
    )
    .unwrap();
    serde_saphyr::from_multiple(&base).unwrap()
}

/// The name of the dry-run Service [`ControlPlane::wait_called`] probes with.
pub const PROBE: &str = "extsvc-guard-probe";

/// `clientConfig` calling `server` at `path` over 127.0.0.1, trusting its CA.
fn server_client_config(server: &Server, path: &str) -> Value {
    let ca = std::fs::read(server.ca()).unwrap();
    json!({"url": format!("https://127.0.0.1:{}{path}", server.addr.port()), "caBundle": b64(&ca)})
}

/// Webhook configurations a test registered; deleted when dropped.
pub struct Webhooks<'a> {
    cp: &'a ControlPlane,
    pub name: String,
}

impl Drop for Webhooks<'_> {
    fn drop(&mut self) {
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            self.cp.kubectl(
                &[
                    "delete",
                    kind,
                    &self.name,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                None,
            );
        }
    }
}

/// A kube-apiserver of a test's own on the shared etcd; stopped when dropped.
pub struct ApiServer<'a> {
    cp: &'a ControlPlane,
    server: Watched,
    pub port: u16,
    pub url: String,
    /// An admin kubeconfig for this API server.
    pub kubeconfig: PathBuf,
}

impl ApiServer<'_> {
    /// Stops it; returns once it has exited.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it (again) on the same port; returns once it is ready.
    pub fn restart(&mut self) {
        self.server.start().unwrap();
        self.cp
            .wait_ready(&mut self.server, self.port, "/readyz")
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn apiserver_args(dir: &Path, port: u16, etcd_url: &str) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        format!("--secure-port={port}"),
        format!("--etcd-servers={etcd_url}"),
        "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
        "--authorization-mode=Node,RBAC".to_owned(),
        format!("--client-ca-file={}", file("ca.crt")),
        format!("--tls-cert-file={}", file("apiserver.crt")),
        format!("--tls-private-key-file={}", file("apiserver.key")),
        // Every API server of the etcd shares issuer and keys: tokens work with each.
        "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
        format!("--service-account-key-file={}", file("sa.pub")),
        format!("--service-account-signing-key-file={}", file("sa.key")),
        // On loopback: otherwise it publishes 127.0.0.1 as the `kubernetes` Service's
        // Endpoints every 10 s, which validation refuses.
        "--endpoint-reconciler-type=none".to_owned(),
        format!(
            "--requestheader-client-ca-file={}",
            file("front-proxy-ca.crt")
        ),
        "--requestheader-allowed-names=front-proxy-client".to_owned(),
        "--requestheader-username-headers=X-Remote-User".to_owned(),
        "--requestheader-group-headers=X-Remote-Group".to_owned(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_owned(),
        format!(
            "--proxy-client-cert-file={}",
            file("front-proxy-client.crt")
        ),
        format!("--proxy-client-key-file={}", file("front-proxy-client.key")),
        format!("--cert-dir={}", file("apiserver-certs")),
    ]
}

enum Credential<'a> {
    Cert(&'a Pair),
    Token(&'a str),
}

fn kubeconfig_yaml(url: &str, ca_pem: &str, credential: Credential) -> String {
    let user = match credential {
        Credential::Cert(pair) => json!({
            "client-certificate-data": b64(pair.cert_pem.as_bytes()),
            "client-key-data": b64(pair.key_pem.as_bytes()),
        }),
        Credential::Token(token) => json!({"token": token}),
    };
    // JSON is YAML.
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": url, "certificate-authority-data": b64(ca_pem.as_bytes())}}],
        "users": [{"name": "envtest", "user": user}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "envtest"}}],
        "current-context": "envtest",
    })
    .to_string()
}

/// A kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}
