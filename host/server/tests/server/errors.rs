//! Every error path answers with the one JSON error shape, the right status and a stable code.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{CHEAP, TestServer};

#[tokio::test]
async fn malformed_json_says_where() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .send(
            Request::post("/v1/runs")
                .header("content-type", "application/json")
                .body(Body::from("{\"workflow\": \"x\",\n  \"inputs\": {,}}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "malformed_json");
    let details = &reply.json()["error"]["details"];
    assert_eq!(details["line"], 2);
    assert_eq!(details["column"], 14);

    let unknown_field = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow": "x", "colour": 1 }),
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown_field.text().contains("colour"),
        "{}",
        unknown_field.text()
    );
}

#[tokio::test]
async fn an_unknown_workflow_is_404_and_lists_the_known_ones() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow": "no-such-flow" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "unknown_workflow");
    assert!(reply.text().contains("caption-boxes-depth-rgb"));
    let traversal = server
        .post_json("/v1/runs", serde_json::json!({ "workflow": "../Cargo" }))
        .await;
    assert_eq!(traversal.error_code(), "unknown_workflow");
    assert_eq!(
        server.get("/v1/workflows/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn invalid_inline_toml_reports_line_and_column() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let toml = "workflow_version = 1\n[workflow]\nname = \"bad\"\n[[steps]]\nid = \"a\"\ngenerate = \"caption\"\nfrom = [\"inputs.missing\"]\nscheme = \"roar\"\n[outputs]\na = \"steps.a\"\n";
    let reply = server
        .post_json("/v1/runs", serde_json::json!({ "workflow_toml": toml }))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.error_code(), "invalid_workflow");
    let diagnostics = reply.json()["error"]["details"]["diagnostics"].clone();
    let unknown = diagnostics
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "unknown-input")
        .unwrap_or_else(|| panic!("{diagnostics}"));
    assert_eq!(unknown["line"], 7);
    assert_eq!(unknown["column"], 9);
    assert_eq!(unknown["step"], "a");

    let broken = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow_toml": "workflow_version = [" }),
        )
        .await;
    assert_eq!(broken.error_code(), "invalid_workflow");
    assert_eq!(
        broken.json()["error"]["details"]["diagnostics"][0]["line"],
        1
    );
}

#[tokio::test]
async fn missing_and_unknown_inputs_are_named() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let missing = server
        .post_json("/v1/runs", serde_json::json!({ "workflow_toml": CHEAP }))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.error_code(), "missing_input");
    assert_eq!(
        missing.json()["error"]["details"]["missing"][0]["input"],
        "caption"
    );
    assert_eq!(
        missing.json()["error"]["details"]["missing"][0]["domain"],
        "caption"
    );

    let unknown = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": "x", "colour": "red" } }),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.error_code(), "unknown_input");
    assert!(unknown.text().contains("colour"));
}

#[tokio::test]
async fn inputs_of_the_wrong_type_are_refused_before_queueing() {
    let Some(server) = TestServer::start() else {
        return;
    };
    for (value, needle) in [
        (serde_json::json!(42), "got a number"),
        (
            serde_json::json!({ "text": "a", "tokens": [1] }),
            "exactly one",
        ),
        (serde_json::json!({ "tokens": [-1] }), "non-negative"),
        (
            serde_json::json!({ "picture": "x" }),
            "unknown key `picture`",
        ),
        (
            serde_json::json!({ "image_base64": "iVBORw0KGgo=" }),
            "domain `caption` takes text",
        ),
    ] {
        let reply = server
            .post_json(
                "/v1/runs",
                serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": value } }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
        assert_eq!(reply.error_code(), "wrong_input_type", "{value}");
        assert!(reply.text().contains(needle), "{value}: {}", reply.text());
    }
    assert!(
        server
            .get("/v1/runs")
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let Some(server) = TestServer::start_with(|config| config.body_limit = 4096) else {
        return;
    };
    let big = "x".repeat(10_000);
    let reply = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow_toml": CHEAP, "inputs": { "caption": big } }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "body_too_large");
    let validate = server
        .send(
            Request::post("/v1/workflows/validate")
                .header("content-type", "application/toml")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    assert_eq!(validate.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_run_ids_are_404_everywhere() {
    let Some(server) = TestServer::start() else {
        return;
    };
    for (method, uri) in [
        ("GET", "/v1/runs/nope"),
        ("DELETE", "/v1/runs/nope"),
        ("POST", "/v1/runs/nope/cancel"),
        ("GET", "/v1/runs/nope/events"),
        ("GET", "/v1/runs/nope/outputs/depth"),
        ("GET", "/v1/runs/nope/outputs/depth/tokens"),
    ] {
        let reply = server.request(method, uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(reply.error_code(), "unknown_run", "{method} {uri}");
    }
    let run = server.run_cheap("a cat").await;
    let id = run["id"].as_str().unwrap();
    let output = server.get(&format!("/v1/runs/{id}/outputs/nope")).await;
    assert_eq!(output.error_code(), "unknown_output");
    let file = server
        .get(&format!("/v1/runs/{id}/outputs/depth/nope"))
        .await;
    assert_eq!(file.error_code(), "unknown_output_file");
}

#[tokio::test]
async fn wrong_content_types_routes_and_methods_get_json_errors() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let reply = server
        .send(
            Request::post("/v1/runs")
                .header("content-type", "text/csv")
                .body(Body::from("a,b"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.error_code(), "unsupported_media_type");
    let route = server.get("/v1/nothing-here").await;
    assert_eq!(route.status, StatusCode::NOT_FOUND);
    assert_eq!(route.error_code(), "not_found");
    let method = server.request("PUT", "/v1/runs").await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(method.error_code(), "method_not_allowed");
    let both = server
        .post_json(
            "/v1/runs",
            serde_json::json!({ "workflow": "a", "workflow_toml": CHEAP }),
        )
        .await;
    assert_eq!(both.error_code(), "ambiguous_workflow");
    let neither = server.post_json("/v1/runs", serde_json::json!({})).await;
    assert_eq!(neither.error_code(), "missing_workflow");
    let wait = server
        .post_json(
            "/v1/runs?wait=soon",
            serde_json::json!({ "workflow_toml": CHEAP }),
        )
        .await;
    assert_eq!(wait.status, StatusCode::BAD_REQUEST);
    assert_eq!(wait.error_code(), "bad_query");
}
