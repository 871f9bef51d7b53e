//! The admission router called in process, without TLS or a socket: every way a request can
//! be refused, and the shape of an answer. tests/server/serve.rs does the same through the real
//! binary over TLS.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{BODY_LIMIT, State, admission_router};
use crate::policy::Policy;

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Service"},"resource":{"group":"","version":"v1","resource":"services"},"namespace":"default","operation":"CREATE","userInfo":{"username":"alice"},"object":{"apiVersion":"v1","kind":"Service","metadata":{"name":"ext-ip","namespace":"default"},"spec":{"type":"ExternalName","externalName":"192.168.1.10"}}}}"#;

fn state(request_timeout: Duration) -> Arc<State> {
    // With the shape metadata, so that /mutate has something to patch.
    let policy = Policy::from_yaml("shapeMetadata: true\n", "policy.yaml").unwrap();
    Arc::new(State::new(policy, request_timeout, 3 * 1024 * 1024, None))
}

async fn send(state: Arc<State>, request: Request<Body>) -> (StatusCode, String) {
    let response = admission_router(state).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn a_review_is_answered_with_the_review_shape_and_the_requests_uid() {
    let (status, body) = send(
        state(Duration::from_secs(2)),
        post("/validate", "application/json", REVIEW),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
    assert_eq!(answer["response"]["status"]["reason"], "Forbidden");
    let (status, body) = send(
        state(Duration::from_secs(2)),
        post("/mutate", "application/json; charset=utf-8", REVIEW),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn another_content_type_is_415() {
    let (status, body) = send(
        state(Duration::from_secs(2)),
        post("/validate", "text/plain", REVIEW),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body.contains("Content-Type must be application/json"),
        "{body}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_by_its_declared_length_or_as_it_arrives() {
    let declared = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, BODY_LIMIT + 1)
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(state(Duration::from_secs(2)), declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("exceeds the limit of 3 MiB"), "{body}");
    let undeclared = post("/validate", "application/json", vec![b' '; BODY_LIMIT + 1]);
    let (status, _) = send(state(Duration::from_secs(2)), undeclared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn malformed_json_is_400_and_a_review_with_a_uid_is_answered_with_the_error() {
    let (status, body) = send(
        state(Duration::from_secs(2)),
        post("/validate", "application/json", "{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not a valid AdmissionReview"), "{body}");
    // With a uid the API server can show the reason: an AdmissionReview with code 400.
    let wrong_object = REVIEW.replace(r#""spec":{"type""#, r#""spec":{"ports":"eighty","type""#);
    let (status, body) = send(
        state(Duration::from_secs(2)),
        post("/validate", "application/json", wrong_object),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["status"]["code"], 400);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    // A body that sends half and then nothing.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tx.send(Ok(axum::body::Bytes::from_static(b"{\"apiVersion\":")))
        .await
        .unwrap();
    let stream = tokio_stream_body(rx);
    let request = post("/validate", "application/json", stream);
    let (status, body) = send(state(Duration::from_millis(200)), request).await;
    drop(tx);
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(body.contains("did not arrive within 200ms"), "{body}");
}

/// A body fed from `rx`, chunk by chunk.
fn tokio_stream_body(
    rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}
