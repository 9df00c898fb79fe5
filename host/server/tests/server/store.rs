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

#[tokio::test]
async fn the_retention_policy_keeps_the_most_recent_ended_runs() {
    let Some(server) = TestServer::start_with(|config| config.keep_runs = Some(2)) else {
        return;
    };
    let mut ids = Vec::new();
    for caption in ["a red ball", "a small dog", "a photo of a cat"] {
        let run = server.run_cheap(caption).await;
        assert_eq!(run["state"], "succeeded", "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // The first run ended first: it and its files are gone, the two later ones stay.
    let first = server.get(&format!("/v1/runs/{}", ids[0])).await;
    assert_eq!(
        first.status,
        axum::http::StatusCode::NOT_FOUND,
        "{}",
        first.text()
    );
    assert!(!server.data.path().join("runs").join(&ids[0]).exists());
    let listed: Vec<String> = server
        .get("/v1/runs")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[1].clone()]);
    for id in &ids[1..] {
        assert!(
            server
                .data
                .path()
                .join("runs")
                .join(id)
                .join("run.json")
                .is_file()
        );
    }

    // At start the policy applies to what the store holds: with one kept, the newest remains.
    let data = server.data;
    drop(server.server);
    let (fixtures, plugins) = crate::common::fixtures().unwrap();
    let mut config = crate::common::config(&fixtures, &plugins, data.path());
    config.keep_runs = Some(1);
    let restarted = TestServer {
        server: tessera_server::Server::load(config).unwrap(),
        data,
    };
    let listed = restarted.get("/v1/runs").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], ids[2].as_str());
    assert!(!restarted.data.path().join("runs").join(&ids[1]).exists());
}
