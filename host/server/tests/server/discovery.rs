//! Health, workflows, validation, plugins, models, the OpenAPI document and the web page.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::TestServer;

#[tokio::test]
async fn health_plugins_and_models_describe_the_server() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let health = server.get("/v1/health").await.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["active_runs"], 0);

    let plugins = server.get("/v1/plugins").await.json();
    let caption = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "caption")
        .unwrap_or_else(|| panic!("{plugins}"));
    assert_eq!(caption["domains"], serde_json::json!(["caption"]));
    assert_eq!(caption["digest"].as_str().unwrap().len(), 64);
    assert!(caption["limits"]["memory_mib"].as_u64().unwrap() > 0);

    let models = server.get("/v1/models").await.json();
    let model = &models[0];
    assert_eq!(model["dtype"], "f32");
    assert_eq!(model["device"], "cpu");
    assert!(model["parameters"].as_u64().unwrap() > 0);
    assert_eq!(
        model["memory_bytes"].as_u64().unwrap(),
        4 * model["parameters"].as_u64().unwrap()
    );
    let domains = model["domains"].as_array().unwrap();
    let caption_domain = domains.iter().find(|d| d["name"] == "caption").unwrap();
    assert_eq!(caption_domain["plugin"], "caption");
    assert_eq!(caption_domain["output"], true);
}

#[tokio::test]
async fn workflows_are_listed_with_their_inputs_and_runnability() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let workflows = server.get("/v1/workflows").await.json();
    let names: Vec<&str> = workflows
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"caption-boxes-depth-rgb"), "{names:?}");
    let chain = workflows
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "caption-boxes-depth-rgb")
        .unwrap();
    assert_eq!(chain["runnable"], true, "{chain}");
    assert_eq!(chain["inputs"][0]["name"], "caption");
    assert_eq!(chain["inputs"][0]["kind"], "text");
    assert_eq!(
        chain["outputs"],
        serde_json::json!(["boxes", "depth", "image"])
    );
    // The fixture model has no plugin for pixel inputs: said, not hidden.
    let rgb = workflows
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "rgb-to-all")
        .unwrap();
    assert_eq!(rgb["runnable"], false);
    assert!(!rgb["problems"].as_array().unwrap().is_empty());

    let detail = server
        .get("/v1/workflows/caption-boxes-depth-rgb")
        .await
        .json();
    assert!(
        detail["source"]
            .as_str()
            .unwrap()
            .contains("workflow_version = 1")
    );
}

#[tokio::test]
async fn validate_takes_toml_or_json_and_reports_positions() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let good = std::fs::read_to_string(
        crate::common::repo_root().join("workflows/caption-boxes-depth-rgb.toml"),
    )
    .unwrap();
    let send = |content_type: &'static str, body: String| {
        Request::post("/v1/workflows/validate")
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let ok = server.send(send("application/toml", good.clone())).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["valid"], true, "{}", ok.text());

    let bad = good.replace(
        "generate = \"tok_depth@224\"",
        "generate = \"tok_nothing@224\"",
    );
    let reply = server
        .send(send("application/toml", bad.clone()))
        .await
        .json();
    assert_eq!(reply["valid"], false);
    let diagnostic = &reply["diagnostics"][0];
    assert_eq!(diagnostic["step"], "depth");
    assert_eq!(diagnostic["line"], 24);
    assert!(diagnostic["column"].as_u64().unwrap() > 1);

    let wrapped = server
        .send(send(
            "application/json",
            serde_json::json!({ "toml": bad }).to_string(),
        ))
        .await
        .json();
    assert_eq!(wrapped["diagnostics"], reply["diagnostics"]);

    let document = serde_json::json!({
        "workflow_version": 1,
        "workflow": { "name": "as-json" },
        "inputs": { "caption": { "domain": "caption" } },
        "steps": [{ "id": "boxes", "generate": "det", "from": ["inputs.caption"], "scheme": "autoregressive" }],
        "outputs": { "boxes": "steps.boxes" }
    });
    let json = server
        .send(send("application/json", document.to_string()))
        .await
        .json();
    assert_eq!(json["valid"], true, "{json}");
    assert!(json["source"].as_str().unwrap().contains("[[steps]]"));

    let unsupported = server.send(send("image/png", String::new())).await;
    assert_eq!(unsupported.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn the_openapi_document_covers_every_endpoint() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let document = server.get("/v1/openapi.json").await.json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/v1/health",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/cancel",
        "/v1/runs/{id}/outputs/{name}",
        "/v1/runs/{id}/outputs/{name}/{file}",
        "/v1/workflows",
        "/v1/workflows/{name}",
        "/v1/workflows/validate",
        "/v1/plugins",
        "/v1/models",
        "/v1/openapi.json",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in ["RunRecord", "ErrorBody", "CreateRunRequest", "StepRecord"] {
        assert!(schemas.contains_key(schema), "{schema} missing");
    }
}

#[tokio::test]
async fn the_web_page_is_served_without_a_build_step() {
    let Some(server) = TestServer::start() else {
        return;
    };
    let page = server.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.text().contains("<script src=\"/app.js\">"));
    let script = server.get("/app.js").await;
    assert!(script.content_type.starts_with("text/javascript"));
    assert!(script.text().contains("/v1/runs"));
    assert!(
        server
            .get("/style.css")
            .await
            .content_type
            .starts_with("text/css")
    );
}
