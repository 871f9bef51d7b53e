//! Who may hold a connection and for how long: the connection cap, handshake and idle
//! timeouts, HTTP/2 stream limits and rapid resets, and client-certificate authentication
//! (`--client-ca`). Real binary, real TLS, loopback only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metric(server: &Server, series: &str) -> f64 {
    let text = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

async fn tls_connect(
    server: &Server,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// One HTTP/1.1 request on an open TLS stream; the answer's head and body as text.
async fn request_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    body: &[u8],
) -> std::io::Result<String> {
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    // The answer is complete once its Content-Length bytes follow the head.
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_closed_at_once_counted_and_the_place_freed_on_close() {
    let server = Server::start(&["--max-connections", "2"]);
    let config = || client_tls(&server.ca(), &[b"http/1.1"]);
    let body = fixture("012-Service-CREATE.json");
    let mut first = tls_connect(&server, config()).await.unwrap();
    let mut second = tls_connect(&server, config()).await.unwrap();
    assert!(
        request_on(&mut first, &body)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        request_on(&mut second, &body)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    let third = tls_connect(&server, config()).await;
    assert!(third.is_err(), "a third connection gets no TLS handshake");
    assert_eq!(
        metric(&server, "extsvc_guard_connections_refused_total").await,
        1.0
    );
    assert_eq!(metric(&server, "extsvc_guard_connections_open").await, 2.0);
    // The two open connections are still served.
    assert!(
        request_on(&mut first, &body)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    drop(first);
    let mut freed = None;
    for _ in 0..50 {
        if let Ok(tls) = tls_connect(&server, config()).await {
            freed = Some(tls);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut freed = freed.expect("a closed connection frees its place");
    assert!(
        request_on(&mut freed, &body)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_completes_its_handshake_or_stays_idle_is_disconnected() {
    // Long enough for a real handshake on a busy CI machine, short enough to wait for.
    let server = Server::start(&["--request-timeout", "1500ms", "--max-connections", "4"]);
    // A TCP connection that sends nothing: no TLS handshake ever starts.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the server closes a connection whose handshake does not start")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");

    // A keep-alive connection left idle after its request.
    let mut tls = tls_connect(&server, client_tls(&server.ca(), &[b"http/1.1"]))
        .await
        .unwrap();
    let answer = request_on(&mut tls, &fixture("012-Service-CREATE.json"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("the server closes an idle keep-alive connection")
        .ok();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // Both places are free again.
    for _ in 0..50 {
        if metric(&server, "extsvc_guard_connections_open").await == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("connections were not released");
}

async fn h2_connect(
    server: &Server,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(server, client_tls(&server.ca(), &[b"h2"]))
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    (send, tokio::spawn(connection))
}

fn h2_request(server: &Server) -> http::Request<()> {
    http::Request::post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_peer_gets_at_most_64_concurrent_streams() {
    let server = Server::start(&[]);
    let (send, _connection) = h2_connect(&server).await;
    let mut send = send.ready().await.unwrap();
    // The server's SETTINGS arrive with its first frames; one exchange makes sure.
    let (response, mut stream) = send.send_request(h2_request(&server), false).unwrap();
    stream
        .send_data(fixture("012-Service-CREATE.json").into(), true)
        .unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(send.current_max_send_streams(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rapid_reset_flood_on_http2_leaves_no_work_behind_and_other_clients_served() {
    let server = Server::start(&[]);
    let (mut send, connection) = h2_connect(&server).await;
    // Open a stream and cancel it at once, again and again (CVE-2023-44487): each reset
    // must end the request's work, so nothing piles up however fast they come.
    let mut sent = 0u32;
    for _ in 0..20_000 {
        send = match send.clone().ready().await {
            Ok(s) => s,
            Err(_) => break, // the server closed the connection: also a defence
        };
        match send.send_request(h2_request(&server), false) {
            Ok((_response, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    assert!(sent > 0);
    // h2 counts streams reset before they were accepted; past 20 the server sends GOAWAY
    // (ENHANCE_YOUR_CALM) and closes: seen here after a few hundred.
    assert!(
        sent < 20_000,
        "the server never closed a connection resetting {sent} streams"
    );
    // Another client is answered, during or after the flood.
    let client = client(&server.ca(), Http::Two);
    let answer = post(
        &client,
        &server.url("/validate"),
        fixture("001-Service-CREATE.json"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // Every cancelled request's work is gone: nothing left in flight.
    let mut in_flight = f64::NAN;
    for _ in 0..100 {
        in_flight = metric(&server, "extsvc_guard_admission_in_flight").await;
        if in_flight == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(in_flight, 0.0, "cancelled requests left work in flight");
    drop(send);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
}

/// A CA and a client certificate it signed, as PEM files in `dir`: `{name}-ca.crt`,
/// `{name}.crt`, `{name}.key`.
fn client_identity(dir: &Path, name: &str) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.crt")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn client_with_certificate(server: &Server, dir: &Path, name: &str) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.ca()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn answered(client: &reqwest::Client, server: &Server) -> bool {
    client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(fixture("001-Service-CREATE.json"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_client_ca_only_clients_holding_a_certificate_it_signed_are_served() {
    let clients = tempfile::tempdir().unwrap();
    client_identity(clients.path(), "apiserver");
    client_identity(clients.path(), "stranger");
    let client_ca = clients.path().join("client-ca.crt");
    std::fs::copy(clients.path().join("apiserver-ca.crt"), &client_ca).unwrap();
    let server = Server::start(&["--client-ca", client_ca.to_str().unwrap()]);
    server.wait_log("certificate signed by");

    let apiserver = client_with_certificate(&server, clients.path(), "apiserver");
    let stranger = client_with_certificate(&server, clients.path(), "stranger");
    let anonymous = client(&server.ca(), Http::Two);
    assert!(
        answered(&apiserver, &server).await,
        "signed by the client CA"
    );
    assert!(!answered(&stranger, &server).await, "signed by another CA");
    assert!(
        !answered(&anonymous, &server).await,
        "no client certificate"
    );

    // The client CA file is reloaded like the serving certificate.
    let staged = clients.path().join("client-ca.crt.new");
    std::fs::copy(clients.path().join("stranger-ca.crt"), &staged).unwrap();
    std::fs::rename(&staged, &client_ca).unwrap();
    server.wait_log("client CA reloaded");
    let apiserver = client_with_certificate(&server, clients.path(), "apiserver");
    let stranger = client_with_certificate(&server, clients.path(), "stranger");
    assert!(answered(&stranger, &server).await, "now trusted");
    assert!(!answered(&apiserver, &server).await, "no longer trusted");

    // The metrics listener is plain HTTP and serves no admission endpoint to anyone.
    let metrics = reqwest::Client::new()
        .post(server.metrics_url("/validate"))
        .header("content-type", "application/json")
        .body(fixture("001-Service-CREATE.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 404);
}

#[test]
fn a_client_ca_file_that_is_not_a_certificate_stops_serve_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]);
    let bad = dir.path().join("clients.crt");
    std::fs::write(&bad, "not a certificate").unwrap();
    let bad_arg = bad.to_string_lossy();
    let out = serve_refused(dir.path(), &["--client-ca", &bad_arg], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} (--client-ca) holds no PEM certificate",
            bad.display()
        )),
        "{stderr}"
    );
}
