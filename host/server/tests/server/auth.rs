//! The bind rule and the bearer token.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{TestServer, config, fixtures};

#[test]
fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let Some((fixtures, plugins)) = fixtures() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mut config = config(&fixtures, &plugins, data.path());
    config.bind = "0.0.0.0:7860".parse().unwrap();
    let error = tessera_server::Server::load(config).err().expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("0.0.0.0:7860") && message.contains("TESSERA_API_TOKEN"),
        "{message}"
    );
}

#[tokio::test]
async fn with_a_token_every_api_call_needs_it() {
    let Some(server) = TestServer::start_with(|config| {
        config.bind = "0.0.0.0:0".parse().unwrap();
        config.token = Some("s3cret".into());
    }) else {
        return;
    };
    let missing = server.get("/v1/runs").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.error_code(), "unauthorized");
    let wrong = server
        .send(
            Request::get("/v1/workflows")
                .header("authorization", "Bearer guess")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = server
        .send(
            Request::get("/v1/workflows")
                .header("authorization", "Bearer s3cret")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(right.status, StatusCode::OK);
    // Liveness probes and the page itself stay open; the page asks for the token.
    assert_eq!(server.get("/v1/health").await.status, StatusCode::OK);
    assert_eq!(server.get("/").await.status, StatusCode::OK);
}
