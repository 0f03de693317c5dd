//! Settings and saved workflows persist on disk across server restarts.

use cretok_tests::Server;
use serde_json::json;

#[tokio::test]
async fn settings_and_workflows_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let (_, settings) = server.get("/api/settings").await?;
    assert_eq!(
        settings,
        json!({"Comfy.TutorialCompleted": true}),
        "first start: only the defaults we serve"
    );
    let (status, _) = server
        .post("/api/settings/Comfy.ColorPalette", &json!("light"))
        .await?;
    assert_eq!(status, 200);

    let (status, _) = server.get("/api/userdata?dir=workflows").await?;
    assert_eq!(status, 404, "no workflows folder yet");
    let workflow = json!({"nodes": [], "links": [], "version": 0.4});
    let (status, saved) = server
        .post(
            "/api/userdata/workflows%2Fblend%20pair.json?overwrite=true&full_info=true",
            &workflow,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(saved["path"], "workflows/blend pair.json");
    let (status, _) = server
        .post(
            "/api/userdata/workflows%2Fblend%20pair.json?overwrite=false",
            &workflow,
        )
        .await?;
    assert_eq!(status, 409, "no silent overwrite");
    server.stop().await?;

    let server = Server::start(dir.path(), &[]).await?;
    let (_, value) = server.get("/api/settings/Comfy.ColorPalette").await?;
    assert_eq!(value, "light");
    let (_, listing) = server
        .get("/api/userdata?dir=workflows&recurse=true&full_info=true&split=false")
        .await?;
    assert_eq!(listing[0]["path"], "blend pair.json");
    let (status, body) = server
        .get("/api/userdata/workflows%2Fblend%20pair.json")
        .await?;
    assert_eq!((status, body), (200, workflow));

    let (status, _) = server
        .post_raw(
            "/api/userdata/workflows%2Fblend%20pair.json/move/workflows%2Frenamed.json",
            vec![],
        )
        .await?;
    assert_eq!(status, 200);
    let r = server
        .http
        .delete(server.url("/api/userdata/workflows%2Frenamed.json"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 204);
    let (_, listing) = server.get("/api/userdata?dir=workflows").await?;
    assert_eq!(listing, json!([]));
    Ok(())
}

#[tokio::test]
async fn uploads_land_in_the_input_folder_without_clobbering() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let upload = |bytes: &'static [u8]| {
        let part = reqwest_part(bytes);
        server
            .http
            .post(server.url("/upload/image"))
            .multipart(part)
            .send()
    };
    let first: serde_json::Value = upload(b"one").await?.json().await?;
    let second: serde_json::Value = upload(b"two").await?.json().await?;
    assert_eq!(
        first,
        json!({"name": "photo.png", "subfolder": "", "type": "input"})
    );
    assert_eq!(second["name"], "photo (1).png");
    assert_eq!(std::fs::read(dir.path().join("input/photo.png"))?, b"one");
    let (status, _) = server
        .get("/view?filename=photo%20(1).png&type=input")
        .await?;
    assert_eq!(status, 200);
    Ok(())
}

fn reqwest_part(bytes: &'static [u8]) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name("photo.png"),
    )
}
