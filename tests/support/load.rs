//! Load for drills: clients that keep sending reviews, each with its own uid, and what the
//! server decided.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Http, Server, client, review};

/// What one request of the load got.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub uid: String,
    /// Phase of the drill when the request was sent.
    pub phase: u8,
    pub object: &'static str,
    /// `Err` is a transport error (no HTTP answer).
    pub answer: Result<(u16, Value), String>,
}

/// Clients sending `objects` round-robin over HTTP/1.1 and HTTP/2 until `stop`, each
/// request with a fresh uid, recording every outcome.
pub fn start_load(
    server: &Server,
    objects: Vec<(&'static str, Value)>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (worker, http) in [Http::One, Http::Two, Http::One, Http::Two]
        .into_iter()
        .enumerate()
    {
        let (url, ca) = (server.url("/validate"), server.ca());
        let (objects, phase, stop, outcomes) = (
            objects.clone(),
            phase.clone(),
            stop.clone(),
            outcomes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = client(&ca, http);
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (name, object) = &objects[n % objects.len()];
                let uid = format!("drill-{worker}-{n}");
                let sent_in = phase.load(Ordering::SeqCst);
                let answer = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(review(&uid, "CREATE", object))
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.bytes().await.map_err(|e| e.to_string());
                        body.map(|b| (status, serde_json::from_slice(&b).unwrap_or(Value::Null)))
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                outcomes.lock().unwrap().push(Outcome {
                    uid,
                    phase: sent_in,
                    object: name,
                    answer,
                });
                n += 1;
            }
        }));
    }
    tasks
}

pub fn rules(response: &Value, key: &str) -> Vec<String> {
    let lines: Vec<String> = match key {
        "denied" => response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .lines()
            .map(str::to_owned)
            .collect(),
        _ => response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_owned))
            .collect(),
    };
    lines
        .iter()
        .filter_map(|l| Some(l.strip_prefix('[')?.split(']').next()?.to_owned()))
        .collect()
}

/// The uids of the decisions the server logged.
pub fn decided_uids(server: &Server) -> HashSet<String> {
    server
        .logs()
        .iter()
        .filter(|l| l.contains("\"message\":\"decision\""))
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some(v["uid"].as_str()?.to_owned())
        })
        .collect()
}
