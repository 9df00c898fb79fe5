//! Server-sent events: ids in order, nothing missed, resumable with `Last-Event-ID`.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{CHEAP, TestServer};

/// (id, event name, data) of every frame of an SSE body.
fn frames(body: &str) -> Vec<(u64, String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|frame| frame.contains("data:"))
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            (
                field("id:").parse().unwrap(),
                field("event:"),
                serde_json::from_str(&field("data:")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_finished_runs_events_replay_in_order_and_end_with_its_state() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let run = server.run_cheap("a yellow star").await;
    let id = run["id"].as_str().unwrap();
    let reply = server.get(&format!("/v1/runs/{id}/events")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("text/event-stream"));
    let events = frames(&reply.text());
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>());
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"));
    assert_eq!(events[0].2["state"], "queued");
    assert!(names.contains(&"queued") && names.contains(&"started") && names.contains(&"finished"));
    let last = events.last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.2["state"].as_str()),
        ("run", Some("succeeded"))
    );
    let finished = events.iter().find(|e| e.1 == "finished").unwrap();
    assert_eq!(finished.2["step"], "depth");
}

#[tokio::test]
async fn reconnecting_with_last_event_id_misses_nothing() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let run = server.run_cheap("a large house").await;
    let id = run["id"].as_str().unwrap();
    let all = frames(&server.get(&format!("/v1/runs/{id}/events")).await.text());
    assert!(all.len() >= 4);
    let cut = 2;
    let resumed = server
        .send(
            Request::get(format!("/v1/runs/{id}/events"))
                .header("last-event-id", cut.to_string())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let rest = frames(&resumed.text());
    assert_eq!(rest, all[cut as usize..].to_vec());
    let by_query = frames(
        &server
            .get(&format!("/v1/runs/{id}/events?after={cut}"))
            .await
            .text(),
    );
    assert_eq!(by_query, rest);
    let bad = server
        .send(
            Request::get(format!("/v1/runs/{id}/events"))
                .header("last-event-id", "yesterday")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "bad_last_event_id");
}

#[tokio::test]
async fn a_live_stream_follows_a_run_to_its_end() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": "a small dog" } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    // Subscribed while the run is queued or running: the body ends when the run does.
    let events = frames(&server.get(&format!("/v1/runs/{id}/events")).await.text());
    let last = events.last().unwrap();
    assert_eq!(last.2["state"], "succeeded");
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=events.len() as u64).collect::<Vec<_>>());
    let record = server.get(&format!("/v1/runs/{id}")).await.json();
    assert_eq!(record["state"], "succeeded");
}
