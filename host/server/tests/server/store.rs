//! The run store across restarts (in process; the killed-process case is in the CLI tests).

use crate::common::TestServer;

#[tokio::test]
async fn finished_runs_survive_a_restart_and_unfinished_ones_are_failed() {
    let Some(first) = TestServer::start() else {
        return;
    };
    let run = first.run_cheap("a white house").await;
    let id = run["id"].as_str().unwrap().to_owned();
    // A record a server left behind mid-run.
    let stale_dir = first.data.path().join("runs/run-stale");
    std::fs::create_dir_all(&stale_dir).unwrap();
    let mut stale = run.clone();
    stale["id"] = "run-stale".into();
    stale["state"] = "running".into();
    stale["steps"][0]["status"] = "running".into();
    stale["outputs"] = serde_json::json!([]);
    std::fs::write(stale_dir.join("run.json"), stale.to_string()).unwrap();
    // A torn event log line is dropped, not fatal.
    std::fs::write(stale_dir.join("events.jsonl"), "{\"id\":1,\"kind\":\"run\",\"data\":{\"event\":\"run\",\"state\":\"queued\"}}\n{\"id\":2,\"ki").unwrap();
    let data = first.data;
    drop(first.server);

    let (fixtures, plugins) = crate::common::fixtures().unwrap();
    let config = crate::common::config(&fixtures, &plugins, data.path());
    let second = TestServer {
        server: tessera_server::Server::load(config).unwrap(),
        data,
    };
    let again = second.get(&format!("/v1/runs/{id}")).await.json();
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["outputs"], run["outputs"]);
    let file = second.get(run["outputs"][0]["url"].as_str().unwrap()).await;
    assert_eq!(file.status, axum::http::StatusCode::OK);

    let stale = second.get("/v1/runs/run-stale").await.json();
    assert_eq!(stale["state"], "failed");
    assert!(
        stale["error"].as_str().unwrap().contains("interrupted"),
        "{stale}"
    );
    assert_eq!(stale["steps"][0]["status"], "skipped");
    let events = second.get("/v1/runs/run-stale/events").await.text();
    assert!(
        events.contains("id: 2") && events.contains("\"failed\""),
        "{events}"
    );
}
