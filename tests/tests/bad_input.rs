//! Bad input never crashes the server: each request is refused with a 4xx and
//! the next request is answered.

use cretok_tests::Server;
use serde_json::json;

async fn still_serving(server: &mut Server) {
    let (status, body) = server.get("/prompt").await.expect("server answers");
    assert_eq!(status, 200);
    assert!(body["exec_info"]["queue_remaining"].is_number());
    assert!(server.alive());
}

#[tokio::test]
async fn malformed_bodies_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), &[]).await?;

    let (status, body) = server.post_raw("/prompt", b"{not json".to_vec()).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_json");
    still_serving(&mut server).await;

    let (status, body) = server
        .post("/prompt", &json!({"prompt": [1, 2, 3]}))
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_prompt");
    still_serving(&mut server).await;

    let (status, body) = server
        .post("/prompt", &json!({"prompt": {"1": "not a node"}}))
        .await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_prompt");
    assert_eq!(body["error"]["details"], "Node ID '#1'");

    let (status, body) = server.post("/prompt", &json!({"no": "prompt"})).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "no_prompt");

    let (status, _) = server.post("/prompt", &json!("just a string")).await?;
    assert_eq!(status, 400);

    let (status, _) = server
        .post("/api/history", &json!({"delete": "not-a-list"}))
        .await?;
    assert_eq!(
        status, 200,
        "a wrong-typed delete list is ignored, as ComfyUI does"
    );

    let (status, body) = server.get("/history?max_items=lots").await?;
    assert_eq!(status, 400, "{body}");
    still_serving(&mut server).await;
    Ok(())
}

#[tokio::test]
async fn huge_bodies_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), &[]).await?;
    let huge = format!("{{\"prompt\": \"{}\"}}", "x".repeat(40 * 1024 * 1024));
    let (status, _) = server.post_raw("/prompt", huge.into_bytes()).await?;
    assert_eq!(status, 413);
    still_serving(&mut server).await;
    Ok(())
}

#[tokio::test]
async fn unknown_routes_are_404() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), &[]).await?;
    for path in ["/nope", "/api/nope", "/object_info/NoSuchNode/extra"] {
        let (status, _) = server.get(path).await?;
        assert_eq!(status, 404, "{path}");
    }
    let (status, body) = server.get("/object_info/NoSuchNode").await?;
    assert_eq!((status, body), (200, json!({})));
    still_serving(&mut server).await;
    Ok(())
}

#[tokio::test]
async fn path_traversal_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = Server::start(dir.path(), &[]).await?;
    // A secret next to the data folders that no route may reveal.
    std::fs::create_dir_all(dir.path().join("output"))?;
    std::fs::write(dir.path().join("secret.txt"), "secret")?;
    std::fs::write(dir.path().join("output/ok.txt"), "fine")?;

    let (status, body) = server.get("/view?filename=ok.txt").await?;
    assert_eq!((status, body), (200, json!("fine")));

    for query in [
        "filename=../secret.txt",
        "filename=..%2Fsecret.txt",
        "filename=%2E%2E%2Fsecret.txt",
        "filename=secret.txt&subfolder=..",
        "filename=secret.txt&subfolder=%2e%2e",
        "filename=secret.txt&subfolder=/",
        "filename=%2Fetc%2Fpasswd",
        "filename=passwd&subfolder=%2Fetc",
        "filename=secret.txt&subfolder=..%5C..",
        "filename=secret.txt&type=../..",
    ] {
        let (status, body) = server.get(&format!("/view?{query}")).await?;
        assert!(
            (400..500).contains(&status),
            "/view?{query} answered {status}"
        );
        assert_ne!(body, json!("secret"), "/view?{query} leaked the file");
        still_serving(&mut server).await;
    }

    for path in [
        "/userdata/..%2F..%2Fsecret.txt",
        "/userdata/%2E%2E%2Fsecret.txt",
        "/userdata/%2Fetc%2Fpasswd",
        "/api/userdata/workflows%2F..%2F..%2F..%2Fsecret.txt",
        "/userdata?dir=..",
        "/userdata?dir=%2Fetc",
    ] {
        let (status, body) = server.get(path).await?;
        assert!((400..500).contains(&status), "{path} answered {status}");
        assert_ne!(body, json!("secret"), "{path} leaked the file");
        let (status, _) = server.post_raw(path, b"overwrite".to_vec()).await?;
        assert!(
            (400..500).contains(&status),
            "POST {path} answered {status}"
        );
        still_serving(&mut server).await;
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secret.txt"))?,
        "secret"
    );
    Ok(())
}
