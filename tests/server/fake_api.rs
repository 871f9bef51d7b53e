//! The fake API server (tests/support/fake_api.rs) driven by the real kube client and watcher:
//! what tests/server/cluster.rs and the benchmarks' fake cluster rely on it for.

use std::fmt::Debug;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use crate::fake_api::FakeApi;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(200);

async fn kube_client(fake: &FakeApi, dir: &Path) -> Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let path = fake.kubeconfig(dir);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

fn service(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": namespace, "name": name, "labels": {"app": name}},
        "spec": {"type": "ExternalName", "externalName": format!("{name}.example.com")},
    })
}

/// The next item of a stream (the `futures` crate is not a dependency: `WatchStreamExt`'s
/// supertrait `Stream` is reached through the bound).
async fn next<S>(stream: &mut S, within: Duration) -> Option<S::Item>
where
    S: WatchStreamExt + Unpin,
{
    let item = std::future::poll_fn(|cx| S::poll_next(Pin::new(&mut *stream), cx));
    tokio::time::timeout(within, item).await.ok().flatten()
}

async fn expect_next<S>(stream: &mut S, fake: &FakeApi) -> S::Item
where
    S: WatchStreamExt + Unpin,
{
    match next(stream, WAIT).await {
        Some(item) => item,
        None => panic!(
            "no watcher event within {WAIT:?}; requests: {:#?}",
            fake.requests()
        ),
    }
}

async fn expect_quiet<S>(stream: &mut S)
where
    S: WatchStreamExt + Unpin,
    S::Item: Debug,
{
    if let Some(item) = next(stream, QUIET).await {
        panic!("expected no watcher event, got {item:?}");
    }
}

/// Short description of an event, for comparing sequences.
fn describe<K: kube::Resource<DynamicType = ()>>(
    event: Result<Event<K>, watcher::Error>,
) -> String {
    match event {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(o)) => format!("InitApply({})", o.name_any()),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(o)) => format!("Apply({})", o.name_any()),
        Ok(Event::Delete(o)) => format!("Delete({})", o.name_any()),
        Err(e) => format!("Err({e})"),
    }
}

async fn expect_events<S, K>(stream: &mut S, fake: &FakeApi, expected: &[&str])
where
    S: WatchStreamExt<Item = Result<Event<K>, watcher::Error>> + Unpin,
    K: kube::Resource<DynamicType = ()>,
{
    let mut got = Vec::new();
    for _ in expected {
        got.push(describe(expect_next(stream, fake).await));
    }
    assert_eq!(got, expected, "requests: {:#?}", fake.requests());
}

/// Polls the watcher (it opens its WATCH only when polled after InitDone) until the fake has
/// an open watch of services; fails on any event meanwhile.
async fn until_watching<S>(stream: &mut S, fake: &FakeApi)
where
    S: WatchStreamExt + Unpin,
    S::Item: Debug,
{
    tokio::select! {
        item = next(stream, WAIT) => panic!("expected no event while the watch opens, got {item:?}"),
        open = fake.wait_for_open_watches("services", 1, WAIT) => {
            assert!(open, "no watch opened; requests: {:#?}", fake.requests());
        }
    }
}

/// LIST requests (every page) of `path`.
fn lists(fake: &FakeApi, path: &str) -> usize {
    let prefix = format!("GET {path}");
    fake.requests()
        .iter()
        .filter(|r| r.split('?').next() == Some(prefix.as_str()) && !r.contains("watch=true"))
        .count()
}

fn watch_requests(fake: &FakeApi, path: &str) -> Vec<String> {
    let prefix = format!("GET {path}?");
    fake.requests()
        .into_iter()
        .filter(|r| r.starts_with(&prefix) && r.contains("watch=true"))
        .collect()
}

#[tokio::test]
async fn a_list_is_paginated_with_limit_and_continue_at_one_resource_version() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    for i in 0..7 {
        fake.apply(service("default", &format!("svc-{i}")));
    }
    let client = kube_client(&fake, dir.path()).await;
    let api = Api::<Service>::all(client);

    let mut names = Vec::new();
    let mut versions = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(token) = token.take() {
            lp = lp.continue_token(&token);
        }
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(ResourceExt::name_any));
        versions.push(page.metadata.resource_version.clone().unwrap());
        match page.metadata.continue_ {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("svc-{i}")).collect();
    assert_eq!(names, expected);
    assert_eq!(versions, vec!["8".to_owned(); 3]);
    assert_eq!(lists(&fake, "/api/v1/services"), 3);

    let everything = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(everything.items.len(), 7);
    assert_eq!(
        everything.items[0].metadata.resource_version.as_deref(),
        Some("2")
    );
    assert!(everything.items[0].metadata.uid.is_some());
    assert!(everything.items[0].metadata.creation_timestamp.is_some());
}

#[tokio::test]
async fn a_watcher_with_a_small_page_size_pages_through_the_initial_list() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    for i in 0..5 {
        fake.apply(service("default", &format!("svc-{i}")));
    }
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default().page_size(2),
    ));
    expect_events(
        &mut events,
        &fake,
        &[
            "Init",
            "InitApply(svc-0)",
            "InitApply(svc-1)",
            "InitApply(svc-2)",
            "InitApply(svc-3)",
            "InitApply(svc-4)",
            "InitDone",
        ],
    )
    .await;
    assert_eq!(lists(&fake, "/api/v1/services"), 3);
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.contains("limit=2&continue=")),
        "{requests:#?}"
    );
}

#[tokio::test]
async fn every_served_kind_lists_through_its_typed_api() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}));
    fake.apply(service("a", "web"));
    fake.apply(service("b", "web"));
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"namespace": "a", "name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}],
    }));
    fake.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "a", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}],
    }));
    let client = kube_client(&fake, dir.path()).await;

    let in_a = Api::<Service>::namespaced(client.clone(), "a");
    assert_eq!(
        in_a.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(
        Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "a");
    assert_eq!(
        endpoints
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "a");
    let listed = slices.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].address_type, "IPv4");
    assert_eq!(listed.items[0].endpoints.len(), 1);
    let namespaces = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await;
    assert_eq!(namespaces.unwrap().items.len(), 1);
    assert_eq!(
        lists(
            &fake,
            "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"
        ),
        1
    );
    assert_eq!(lists(&fake, "/api/v1/services"), 1);
}

#[tokio::test]
async fn a_watcher_sees_the_initial_list_then_the_changes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    fake.apply(service("other", "b"));
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default(),
    ));
    expect_events(
        &mut events,
        &fake,
        &["Init", "InitApply(a)", "InitApply(b)", "InitDone"],
    )
    .await;

    fake.apply(service("default", "c"));
    let mut changed = service("default", "a");
    changed["spec"]["externalName"] = json!("changed.example.com");
    fake.apply(changed);
    expect_events(&mut events, &fake, &["Apply(c)", "Apply(a)"]).await;

    assert_eq!(lists(&fake, "/api/v1/services"), 1);
    let watches = watch_requests(&fake, "/api/v1/services");
    assert_eq!(
        watches,
        vec![
            "GET /api/v1/services?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=3"
        ]
    );
}

#[tokio::test]
async fn a_namespaced_watcher_sees_only_its_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("mine", "a"));
    fake.apply(service("theirs", "b"));
    let client = kube_client(&fake, dir.path()).await;
    let api = Api::<Service>::namespaced(client, "mine");
    let mut events = Box::pin(watch(api, watcher::Config::default()));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    fake.apply(service("theirs", "c"));
    fake.apply(service("mine", "d"));
    expect_events(&mut events, &fake, &["Apply(d)"]).await;
    assert_eq!(
        watch_requests(&fake, "/api/v1/namespaces/mine/services").len(),
        1
    );
}

#[tokio::test]
async fn a_dropped_watch_resumes_from_its_resource_version_without_a_new_list() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default(),
    ));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    fake.apply(service("default", "b"));
    expect_events(&mut events, &fake, &["Apply(b)"]).await;

    fake.drop_watches();
    fake.apply(service("default", "c"));
    expect_events(&mut events, &fake, &["Apply(c)"]).await;

    assert_eq!(
        lists(&fake, "/api/v1/services"),
        1,
        "{:#?}",
        fake.requests()
    );
    let watches = watch_requests(&fake, "/api/v1/services");
    assert_eq!(watches.len(), 2, "{watches:#?}");
    assert!(watches[1].ends_with("&resourceVersion=3"), "{watches:#?}");
}

#[tokio::test]
async fn a_compacted_history_makes_a_resuming_watcher_relist() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default(),
    ));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    until_watching(&mut events, &fake).await;

    // The watcher is at resourceVersion 2 and never hears of b (rv 3) before the history is
    // compacted past it and its connection drops.
    fake.apply_silently(service("default", "b"));
    fake.compact();
    fake.drop_watches();
    match expect_next(&mut events, &fake).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert_eq!(status.message, "too old resource version: 2 (3)");
        }
        other => panic!(
            "expected a 410 watch error, got {:?}",
            other.map(|e| describe(Ok(e)))
        ),
    }
    expect_events(
        &mut events,
        &fake,
        &["Init", "InitApply(a)", "InitApply(b)", "InitDone"],
    )
    .await;
    assert_eq!(lists(&fake, "/api/v1/services"), 2);
    let watches = watch_requests(&fake, "/api/v1/services");
    assert_eq!(watches.len(), 2, "{watches:#?}");
    assert!(
        watches.iter().all(|w| w.ends_with("&resourceVersion=2")),
        "{watches:#?}"
    );

    // b reached the watcher through the relist: delivering it late changes nothing.
    fake.deliver_pending();
    expect_quiet(&mut events).await;
    fake.apply(service("default", "c"));
    expect_events(&mut events, &fake, &["Apply(c)"]).await;
}

#[tokio::test]
async fn bookmarks_advance_the_watcher_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default(),
    ));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    until_watching(&mut events, &fake).await;

    // A change elsewhere moves the resourceVersion to 3; the bookmark tells the watcher.
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    fake.bookmark();
    expect_quiet(&mut events).await;
    fake.drop_watches();
    fake.apply(service("default", "b"));
    expect_events(&mut events, &fake, &["Apply(b)"]).await;

    let watches = watch_requests(&fake, "/api/v1/services");
    assert_eq!(watches.len(), 2, "{watches:#?}");
    assert!(watches[1].ends_with("&resourceVersion=3"), "{watches:#?}");
    assert_eq!(lists(&fake, "/api/v1/services"), 1);
}

#[tokio::test]
async fn a_silent_apply_is_listed_at_once_but_reaches_the_watcher_only_when_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    ));
    expect_events(&mut events, &fake, &["Init", "InitDone"]).await;

    fake.apply_silently(service("default", "late"));
    let api = Api::<Service>::namespaced(client, "default");
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].name_any(), "late");
    expect_quiet(&mut events).await;

    // A later change queues behind the held-back one: watches deliver in order.
    fake.apply(service("default", "later"));
    expect_quiet(&mut events).await;
    fake.deliver_pending();
    expect_events(&mut events, &fake, &["Apply(late)", "Apply(later)"]).await;
}

#[tokio::test]
async fn an_unresponsive_server_answers_nothing_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    ));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    until_watching(&mut events, &fake).await;
    let api = Api::<Service>::namespaced(client, "default");

    fake.set_unresponsive(true);
    let list =
        tokio::time::timeout(Duration::from_millis(500), api.list(&ListParams::default())).await;
    assert!(list.is_err(), "LIST answered while unresponsive: {list:?}");
    // Logged when it arrived, though never answered.
    assert_eq!(lists(&fake, "/api/v1/namespaces/default/services"), 1);
    fake.apply(service("default", "b"));
    expect_quiet(&mut events).await;

    fake.set_unresponsive(false);
    expect_events(&mut events, &fake, &["Apply(b)"]).await;
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2);

    // Dropping watches works even while unresponsive; the watcher resumes once answered.
    fake.set_unresponsive(true);
    fake.apply(service("default", "c"));
    fake.drop_watches();
    expect_quiet(&mut events).await;
    fake.set_unresponsive(false);
    expect_events(&mut events, &fake, &["Apply(c)"]).await;
    assert_eq!(watch_requests(&fake, "/api/v1/services").len(), 2);
    assert_eq!(lists(&fake, "/api/v1/services"), 1);
}

#[tokio::test]
async fn a_watch_timeout_ends_the_stream_and_the_watcher_watches_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default().timeout(1),
    ));
    expect_events(&mut events, &fake, &["Init", "InitDone"]).await;
    // Keep polling the watcher (it re-watches only when polled) until the second watch.
    let deadline = tokio::time::Instant::now() + WAIT;
    while watch_requests(&fake, "/api/v1/services").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            fake.requests()
        );
        expect_quiet(&mut events).await;
    }
    fake.apply(service("default", "a"));
    expect_events(&mut events, &fake, &["Apply(a)"]).await;
    assert_eq!(lists(&fake, "/api/v1/services"), 1);
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_initial_events_and_the_end_bookmark() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let client = kube_client(&fake, dir.path()).await;
    let mut events = Box::pin(watch(
        Api::<Service>::all(client),
        watcher::Config::default().streaming_lists(),
    ));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    fake.apply(service("default", "b"));
    expect_events(&mut events, &fake, &["Apply(b)"]).await;
    assert_eq!(lists(&fake, "/api/v1/services"), 0);
    let watches = watch_requests(&fake, "/api/v1/services");
    assert!(
        watches[0].contains("sendInitialEvents=true"),
        "{watches:#?}"
    );
}

#[tokio::test]
async fn a_metadata_watcher_receives_partial_objects() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let client = kube_client(&fake, dir.path()).await;
    let api = Api::<PartialObjectMeta<Service>>::all(client);
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].metadata.labels.as_ref().unwrap()["app"],
        "a"
    );
    let mut events = Box::pin(watch(api, watcher::Config::default()));
    expect_events(&mut events, &fake, &["Init", "InitApply(a)", "InitDone"]).await;
    fake.apply(service("default", "b"));
    match expect_next(&mut events, &fake).await {
        Ok(Event::Apply(meta)) => {
            assert_eq!(meta.name_any(), "b");
            assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
        }
        other => panic!(
            "expected Apply(b), got {:?}",
            other.map(|e| describe(Ok(e)))
        ),
    }
}

#[tokio::test]
async fn a_selector_is_refused_rather_than_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));
    let api = Api::<Service>::all(kube_client(&fake, dir.path()).await);
    for params in [
        ListParams::default().labels("app=a"),
        ListParams::default().fields("metadata.name=a"),
    ] {
        match api.list(&params).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 400, "{status:?}"),
            other => panic!("expected 400, got {other:?}"),
        }
    }
}

/// Sends raw HTTP/1.1 and returns the status code and body.
async fn raw(fake: &FakeApi, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let request = request.replace('\n', "\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

fn get_request(target: &str) -> String {
    format!("GET {target} HTTP/1.1\nHost: fake\nConnection: close\n\n")
}

#[tokio::test]
async fn odd_requests_get_status_errors_instead_of_panics() {
    let fake = FakeApi::start().await;
    for (target, code) in [
        ("/api/v1/services?limit=abc", 400),
        ("/api/v1/services?limit=-1", 400),
        ("/api/v1/services?watch=maybe", 400),
        ("/api/v1/services?watch=1&resourceVersion=x", 400),
        ("/api/v1/services?watch=true&timeoutSeconds=soon", 400),
        ("/api/v1/services?labelSelector=%zz", 400),
        ("/api/v1/services?labelSelector=app", 400),
        ("/api/v1/services?continue=garbage", 400),
        ("/api/v1/services?continue=99-1", 410),
        ("/api/v1/pods", 404),
        ("/api/v2/services", 404),
        ("/api/v1/namespaces//services", 404),
        ("/api/v1/namespaces/a/namespaces", 404),
        ("/api/v1/namespaces/a/services/b/status", 404),
        ("/apis/discovery.k8s.io/v1/namespaces/x", 404),
        ("/api/v1/namespaces/a/services/b", 404),
        ("/api/v1/namespaces/a", 404),
        ("/", 404),
        ("/version", 404),
    ] {
        let (got, body) = raw(&fake, &get_request(target)).await;
        assert_eq!(got, code, "{target}: {body}");
        if code >= 400 {
            let status: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"));
            assert_eq!(status["kind"], "Status", "{target}");
            assert_eq!(status["code"], code, "{target}");
        }
    }
    let post =
        "POST /api/v1/services HTTP/1.1\nHost: fake\nContent-Length: 2\nConnection: close\n\n{}";
    assert_eq!(raw(&fake, post).await.0, 405);
    // Still serving.
    let (code, body) = raw(&fake, &get_request("/api/v1/services")).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["metadata"]["resourceVersion"], "1");
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_is_a_410_error_event() {
    let fake = FakeApi::start().await;
    for i in 0..3 {
        fake.apply(service("default", &format!("s{i}")));
    }
    fake.compact();
    let (code, body) = raw(
        &fake,
        &get_request("/api/v1/services?watch=true&resourceVersion=1"),
    )
    .await;
    assert_eq!(code, 200);
    let body = body
        .lines()
        .filter(|l| l.starts_with('{'))
        .collect::<Vec<_>>();
    assert_eq!(body.len(), 1, "{body:?}");
    let event: Value = serde_json::from_str(body[0]).unwrap();
    assert_eq!(
        event,
        json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (4)", "reason": "Expired", "code": 410,
        }})
    );
}

#[tokio::test]
async fn dropping_the_fake_refuses_connections() {
    let fake = FakeApi::start().await;
    let addr = fake.addr();
    assert_eq!(raw(&fake, &get_request("/api/v1/services")).await.0, 200);
    drop(fake);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after drop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_kubeconfig_names_the_fake_cluster_user_and_context() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::start().await;
    let path = fake.kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("fake"));
    let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some(fake.url().as_str()));
    let listed = Api::<Service>::all(kube_client(&fake, dir.path()).await)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

/// Reads a raw response until the server closes the connection (or resets it).
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {WAIT:?}"),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn dropped_watches_end_without_the_final_chunk_and_timed_out_ones_with_it() {
    let fake = FakeApi::start().await;
    fake.apply(service("default", "a"));

    let mut dropped = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let request =
        get_request("/api/v1/services?watch=true&resourceVersion=1&allowWatchBookmarks=true");
    dropped
        .write_all(request.replace('\n', "\r\n").as_bytes())
        .await
        .unwrap();
    assert!(fake.wait_for_open_watches("services", 1, WAIT).await);
    fake.bookmark();
    fake.drop_watches();
    let response = read_until_closed(&mut dropped).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{response}"
    );
    assert!(response.contains(r#""type":"ADDED""#), "{response}");
    assert!(!response.ends_with("0\r\n\r\n"), "{response}");

    let mut timed_out = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let request = get_request("/api/v1/services?watch=true&resourceVersion=1&timeoutSeconds=1");
    timed_out
        .write_all(request.replace('\n', "\r\n").as_bytes())
        .await
        .unwrap();
    let response = read_until_closed(&mut timed_out).await;
    assert!(response.contains(r#""type":"ADDED""#), "{response}");
    assert!(response.ends_with("}\n\r\n0\r\n\r\n"), "{response}");
}
