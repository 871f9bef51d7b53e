//! A fake Kubernetes API server for benchmarks (the test fake in `tests/support/fake_api.rs`),
//! filled with a generated cluster and served over TLS on loopback, so that a real
//! `extsvc-guard serve` can watch it:
//!
//!     cargo bench --bench fake_cluster -- --services 10000 --namespaces 1000 \
//!         --endpoints controller --port 28444 [--dir DIR] [--extra FIXTURE.json]...
//!
//! `--endpoints none|hand-written|controller`: Services only; selectorless Services with
//! hand-written Endpoints and EndpointSlices (the worst case: the cache keeps all three);
//! selector Services with the control plane's Endpoints and EndpointSlices. `--extra` adds the
//! object of a captured review (e.g. `001-Service-CREATE.json`, the mysql-svc);
//! `--mistakes-every N` gives one Service in N the seed's mistakes (its Endpoints and
//! EndpointSlice named for another Service, their port renamed). Writes
//! `DIR/kubeconfig` (default `target/fake-cluster`), prints `fake-cluster ready` when it
//! listens, and serves until killed. Without `--services` (as under a plain `cargo bench`)
//! it says how to use it and exits.

#[path = "../tests/support/fake_api.rs"]
mod fake_api;

mod cases;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use cases::EndpointsMode;
use fake_api::{FAKE_TOKEN, FakeApi};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

struct Args {
    services: usize,
    namespaces: usize,
    endpoints: EndpointsMode,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    mistakes_every: usize,
}

const USAGE: &str = "usage: fake_cluster --services N [--namespaces M] [--endpoints none|hand-written|controller] [--mistakes-every N] [--port P] [--dir DIR] [--extra FIXTURE.json]...";

fn args() -> Result<Option<Args>, String> {
    let mut args = Args {
        services: 0,
        namespaces: 1000,
        endpoints: EndpointsMode::Controller,
        port: 28444,
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fake-cluster"),
        extra: Vec::new(),
        mistakes_every: 0,
    };
    let mut given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--services" => {
                args.services = value.parse().map_err(|e| bad(&e))?;
                given = true;
            }
            "--namespaces" => args.namespaces = value.parse().map_err(|e| bad(&e))?,
            "--endpoints" => {
                args.endpoints = EndpointsMode::parse(&value).ok_or_else(|| bad(&"unknown mode"))?
            }
            "--port" => args.port = value.parse().map_err(|e| bad(&e))?,
            "--dir" => args.dir = PathBuf::from(value),
            "--extra" => args.extra.push(value),
            "--mistakes-every" => args.mistakes_every = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(given.then_some(args))
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            eprintln!("fake_cluster: not a measurement; {USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("fake_cluster: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let api = FakeApi::start().await;
    let started = std::time::Instant::now();
    let mut count = 0;
    for i in 0..args.services {
        let objects = [
            Some(cases::service(i, args.namespaces, args.endpoints)),
            cases::endpoints(i, args.namespaces, args.endpoints),
            cases::slice(i, args.namespaces, args.endpoints),
        ];
        for mut object in objects.into_iter().flatten() {
            if args.mistakes_every > 0
                && i % args.mistakes_every == 0
                && object["kind"] != "Service"
            {
                cases::mistake(&mut object);
            }
            api.apply(object);
            count += 1;
        }
    }
    for n in 0..args.namespaces {
        api.apply(
            serde_json::json!({"kind": "Namespace", "metadata": {"name": format!("team-{n}")}}),
        );
    }
    api.apply(serde_json::json!({"kind": "Namespace", "metadata": {"name": "default"}}));
    for name in &args.extra {
        let mut object = cases::fixture_object(name);
        // As stored, not as created: the fake assigns these.
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.retain(|k, _| k != "uid" && k != "resourceVersion");
        }
        api.apply(object);
        count += 1;
    }
    // No watch resumes from before now: the change history need not be kept.
    api.compact();
    eprintln!(
        "fake_cluster: {count} objects ({} Services, endpoints {:?}, {} namespaces) in {:.1}s",
        args.services,
        args.endpoints,
        args.namespaces,
        started.elapsed().as_secs_f64()
    );

    let cert = match rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]) {
        Ok(c) => c,
        Err(e) => fail(&format!("cannot make a certificate: {e}")),
    };
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let (Ok(cert_der), Ok(key_der)) = (
        CertificateDer::from_pem_slice(cert_pem.as_bytes()),
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()),
    ) else {
        fail("cannot read the certificate just made")
    };
    let tls = match rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
    {
        Ok(c) => c,
        Err(e) => fail(&format!("TLS configuration: {e}")),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = match TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on 127.0.0.1:{}: {e}", args.port)),
    };

    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        fail(&format!("cannot create {}: {e}", args.dir.display()));
    }
    let kubeconfig = args.dir.join("kubeconfig");
    let ca = base64::engine::general_purpose::STANDARD.encode(cert_pem.as_bytes());
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\n\
         users:\n- name: fake\n  user:\n    token: {FAKE_TOKEN}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\n",
        port = args.port
    );
    if let Err(e) = std::fs::write(&kubeconfig, yaml) {
        fail(&format!("cannot write {}: {e}", kubeconfig.display()));
    }
    println!(
        "fake-cluster ready on https://127.0.0.1:{} kubeconfig {}",
        args.port,
        kubeconfig.display()
    );

    // TLS in front of the fake's plain HTTP listener.
    let backend = api.addr();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}

fn fail(message: &str) -> ! {
    eprintln!("fake_cluster: {message}");
    std::process::exit(1);
}
