//! Creating, reading, listing, cancelling and deleting runs; the queue; idempotent retries.

use axum::http::StatusCode;

use crate::common::{CHEAP, TestServer};

#[tokio::test]
async fn a_run_produces_its_outputs_and_serves_them_with_their_content_type() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let run = server.run_cheap("a photo of a cat").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["steps"][0]["status"], "finished");
    assert_eq!(run["steps"][0]["progress"], 1.0);
    let id = run["id"].as_str().unwrap();
    let output = &run["outputs"][0];
    assert_eq!(output["name"], "depth");
    assert_eq!(output["domain"], "tok_depth@224");
    let files = output["files"].as_array().unwrap();
    let kinds: Vec<&str> = files.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"raw-tokens"), "{kinds:?}");
    assert!(kinds.contains(&"raw-tokens-preview"), "{kinds:?}");

    let primary = server.get(output["url"].as_str().unwrap()).await;
    assert_eq!(primary.status, StatusCode::OK);
    assert_eq!(primary.content_type, files[0]["content_type"]);
    for file in files {
        let reply = server.get(file["url"].as_str().unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type, file["content_type"].as_str().unwrap());
        assert_eq!(reply.body.len() as u64, file["bytes"].as_u64().unwrap());
    }
    let preview = files
        .iter()
        .find(|f| f["kind"] == "raw-tokens-preview")
        .unwrap();
    let png = server.get(preview["url"].as_str().unwrap()).await;
    assert!(png.body.starts_with(b"\x89PNG"));

    let fetched = server.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.json()["id"], id);
    let listed = server.get("/v1/runs").await.json();
    assert!(listed.as_array().unwrap().iter().any(|r| r["id"] == id));
    let succeeded = server.get("/v1/runs?state=succeeded&limit=1").await.json();
    assert_eq!(succeeded.as_array().unwrap().len(), 1);
    assert!(
        server
            .get("/v1/runs?state=failed")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let bad = server.get("/v1/runs?state=sleeping").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "bad_query");
}

#[tokio::test]
async fn multipart_requests_run_like_json_ones() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .post_multipart(
            "/v1/runs?wait=60",
            &[
                ("workflow_toml", None, CHEAP.as_bytes()),
                ("seed", None, b"3"),
                ("inputs.caption", None, b"a red ball"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let run = reply.json();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["seed"], 3);
}

#[tokio::test]
async fn multipart_image_uploads_are_images_and_checked_against_the_domain() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .post_multipart(
            "/v1/runs",
            &[
                ("workflow_toml", None, CHEAP.as_bytes()),
                (
                    "inputs.caption",
                    Some(("photo.png", "image/png")),
                    b"\x89PNG\r\n\x1a\n not really a picture",
                ),
            ],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text()
    );
    assert_eq!(reply.error_code(), "wrong_input_type");
    assert!(reply.text().contains("got an image"), "{}", reply.text());

    let unknown_field = server
        .post_multipart("/v1/runs", &[("colour", None, b"red")])
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_field.error_code(), "malformed_multipart");
}

#[tokio::test]
async fn a_client_run_id_makes_retries_idempotent() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let request = serde_json::json!({
        "workflow_toml": CHEAP, "inputs": { "caption": "a dog" }, "run_id": "client-42"
    });
    let first = server.post_json("/v1/runs?wait=60", request.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json()["id"], "client-42");
    let retry = server.post_json("/v1/runs", request).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.json()["id"], "client-42");
    assert_eq!(
        server
            .get("/v1/runs")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let different = server
        .post_json(
            "/v1/runs",
            serde_json::json!({
                "workflow_toml": CHEAP, "inputs": { "caption": "a cat" }, "run_id": "client-42"
            }),
        )
        .await;
    assert_eq!(different.status, StatusCode::CONFLICT);
    assert_eq!(different.error_code(), "run_id_conflict");

    let bad = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": "x" }, "run_id": "../up" }),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_run_id");
}

#[tokio::test]
async fn the_same_request_again_is_served_from_the_step_cache() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let first = server.run_cheap("a green ball").await;
    assert_eq!(first["steps"][0]["cached"], false);
    let second = server.run_cheap("a green ball").await;
    assert_eq!(second["state"], "succeeded");
    assert_eq!(second["steps"][0]["status"], "cached");
    assert_eq!(second["steps"][0]["cached"], true);
    let file = |run: &serde_json::Value| {
        run["outputs"][0]["files"][0]["url"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        server.get(&file(&first)).await.body,
        server.get(&file(&second)).await.body
    );
}

/// A workflow that takes seconds on the fixture model (an autoregressive caption of 256 tokens).
const SLOW: &str = r#"
workflow_version = 1
[workflow]
name = "slow"
[inputs.caption]
domain = "caption"
[[steps]]
id = "boxes"
generate = "det"
from = ["inputs.caption"]
scheme = "autoregressive"
[[steps]]
id = "depth"
generate = "tok_depth@224"
from = ["steps.boxes"]
scheme = "roar"
decoding_steps = 8
[outputs]
depth = "steps.depth"
"#;

async fn wait_for_state(server: &TestServer, id: &str, wanted: &[&str]) -> serde_json::Value {
    for _ in 0..600 {
        let run = server.get(&format!("/v1/runs/{id}")).await.json();
        if wanted.contains(&run["state"].as_str().unwrap()) {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("run {id} never reached {wanted:?}");
}

#[tokio::test]
async fn cancel_stops_a_running_run_and_a_finished_one_is_a_conflict() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow_toml": SLOW, "inputs": { "caption": "a cat" } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    wait_for_state(&server, &id, &["running"]).await;
    let deleting_active = server.request("DELETE", &format!("/v1/runs/{id}")).await;
    assert_eq!(deleting_active.status, StatusCode::CONFLICT);
    assert_eq!(deleting_active.error_code(), "run_active");

    let cancel = server
        .request("POST", &format!("/v1/runs/{id}/cancel"))
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED);
    let run = wait_for_state(&server, &id, &["cancelled", "succeeded", "failed"]).await;
    assert_eq!(run["state"], "cancelled", "{run}");
    for step in run["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "skipped", "{step}");
    }
    // No half-written artifacts: the cancelled steps wrote nothing.
    let out = server.data.path().join("runs").join(&id).join("out");
    assert!(!out.join("depth").exists());

    let again = server
        .request("POST", &format!("/v1/runs/{id}/cancel"))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "run_finished");
}

#[tokio::test]
async fn deleting_a_run_removes_it_and_its_outputs() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let run = server.run_cheap("a blue ball").await;
    let id = run["id"].as_str().unwrap();
    let dir = server.data.path().join("runs").join(id);
    assert!(dir.join("run.json").is_file());
    let reply = server.request("DELETE", &format!("/v1/runs/{id}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(!dir.exists());
    assert_eq!(
        server.get(&format!("/v1/runs/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let url = run["outputs"][0]["url"].as_str().unwrap();
    assert_eq!(server.get(url).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn runs_beyond_the_limit_wait_in_order() {
    let Some(server) = TestServer::start_with(|config| config.max_concurrent_runs = 1) else {
        return;
    };
    let mut ids = Vec::new();
    for caption in ["one", "two", "three"] {
        let reply = server
            .post_json(
                "/v1/runs",
                serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": caption }, "no_cache": true }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    let mut runs = Vec::new();
    for id in &ids {
        runs.push(wait_for_state(&server, id, &["succeeded"]).await);
    }
    for pair in runs.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(
            later["started_ms"].as_u64() >= earlier["finished_ms"].as_u64(),
            "one run at a time, in order: {earlier} then {later}"
        );
    }
}
