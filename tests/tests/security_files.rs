//! Files stay in their folders (docs/security.md): links in output/, input/,
//! temp/ and the user folder never lead a read, listing, write, move, delete,
//! upload or output prefix outside the data directory; served files are typed,
//! never sniffed, and active content is downloaded, not rendered.
#![cfg(unix)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::Result;
use cretok_tests::Server;
use serde_json::json;

const SECRET: &str = "SECRET-outside-the-data-dir";
const KINDS: [&str; 3] = ["output", "input", "temp"];

/// A folder outside the data directory holding a secret file.
fn outside(root: &Path) -> Result<PathBuf> {
    let dir = root.join("outside");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("secret.txt"), SECRET)?;
    Ok(dir)
}

/// In `folder`: a file link and a directory link out, a self-loop, and a link
/// to the folder itself (inside, but a listing that followed it would loop).
fn plant_links(folder: &Path, outside: &Path) -> Result<()> {
    std::fs::create_dir_all(folder)?;
    symlink(outside.join("secret.txt"), folder.join("leak.txt"))?;
    symlink(outside, folder.join("dirlink"))?;
    symlink(folder.join("loop"), folder.join("loop"))?;
    symlink(folder, folder.join("itself"))?;
    Ok(())
}

fn outside_untouched(outside: &Path) {
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["secret.txt"], "something was written outside");
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        SECRET
    );
}

async fn start() -> Result<(tempfile::TempDir, PathBuf, Server)> {
    let root = tempfile::tempdir()?;
    let outside = outside(root.path())?;
    let data = root.path().join("data");
    for kind in KINDS {
        plant_links(&data.join(kind), &outside)?;
    }
    plant_links(&data.join("user/default/workflows"), &outside)?;
    let server = Server::start(&data, &[]).await?;
    Ok((root, outside, server))
}

fn upload(name: &str, kind: &str, subfolder: &str, overwrite: bool) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(b"pwned".to_vec()).file_name(name.to_owned());
    reqwest::multipart::Form::new()
        .part("image", part)
        .text("type", kind.to_owned())
        .text("subfolder", subfolder.to_owned())
        .text("overwrite", overwrite.to_string())
}

#[tokio::test]
async fn view_and_upload_never_leave_their_folder() -> Result<()> {
    let (_root, outside, server) = start().await?;
    for kind in KINDS {
        for (subfolder, file) in [
            ("", "leak.txt"),
            ("dirlink", "secret.txt"),
            ("loop", "x.txt"),
            ("itself/dirlink", "secret.txt"),
            ("", "loop"),
        ] {
            let path = format!("/view?type={kind}&subfolder={subfolder}&filename={file}");
            let (status, body) = server.get(&path).await?;
            assert_eq!(status, 403, "{path}");
            assert!(!body.to_string().contains(SECRET), "{path} leaked");
        }
        for (name, subfolder, overwrite) in [
            ("up.png", "dirlink", false),
            ("up.png", "dirlink/deeper", false),
            ("up.png", "loop", false),
            ("leak.txt", "", true),
            ("secret.txt", "itself/dirlink", true),
        ] {
            let r = server
                .http
                .post(server.url("/upload/image"))
                .multipart(upload(name, kind, subfolder, overwrite))
                .send()
                .await?;
            assert_eq!(r.status().as_u16(), 403, "{kind} {subfolder}/{name}");
        }
        // A link that stays inside is followed.
        std::fs::write(server.data_dir.join(kind).join("inside.txt"), "in")?;
        let path = format!("/view?type={kind}&subfolder=itself&filename=inside.txt");
        assert_eq!(server.get(&path).await?, (200, json!("in")));
    }
    outside_untouched(&outside);
    Ok(())
}

#[tokio::test]
async fn user_data_never_leaves_its_folder() -> Result<()> {
    let (_root, outside, server) = start().await?;
    let w = "/userdata/workflows%2F";
    for file in [
        "leak.txt",
        "dirlink%2Fsecret.txt",
        "loop",
        "itself%2Fleak.txt",
    ] {
        let (status, body) = server.get(&format!("{w}{file}")).await?;
        assert_eq!(status, 403, "read {file}");
        assert!(!body.to_string().contains(SECRET));
        let (status, _) = server.post(&format!("{w}{file}"), &json!("pwned")).await?;
        assert_eq!(status, 403, "write {file}");
        let r = server
            .http
            .delete(server.url(&format!("{w}{file}")))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 403, "delete {file}");
        let moved_out = format!("{w}{file}/move/workflows%2Fmine.json");
        assert_eq!(
            server.post_raw(&moved_out, vec![]).await?.0,
            403,
            "move {file}"
        );
    }
    for file in [
        "dirlink%2Fnew.json",
        "dirlink%2Fsub%2Fnew.json",
        "loop%2Fnew.json",
    ] {
        let (status, _) = server.post(&format!("{w}{file}"), &json!("pwned")).await?;
        assert_eq!(status, 403, "write {file}");
    }
    let (status, _) = server
        .post(&format!("{w}mine.json"), &json!({"a": 1}))
        .await?;
    assert_eq!(status, 200);
    let moved_in = format!("{w}mine.json/move/workflows%2Fdirlink%2Fstolen.json");
    assert_eq!(server.post_raw(&moved_in, vec![]).await?.0, 403);
    for dir in [
        "workflows%2Fdirlink",
        "workflows%2Floop",
        "workflows%2Fitself%2Fdirlink",
    ] {
        let (status, _) = server
            .get(&format!("/userdata?dir={dir}&recurse=true"))
            .await?;
        assert_eq!(status, 403, "list {dir}");
    }
    // The listing skips links: it neither leaves the folder nor loops.
    let (status, listing) = server
        .get("/userdata?dir=workflows&recurse=true&full_info=false")
        .await?;
    assert_eq!((status, listing), (200, json!(["mine.json"])));
    outside_untouched(&outside);
    assert!(server
        .data_dir
        .join("user/default/workflows/mine.json")
        .is_file());
    Ok(())
}

#[tokio::test]
async fn output_prefixes_never_leave_the_output_folder() -> Result<()> {
    let (_root, outside, server) = start().await?;
    for prefix in [
        "dirlink/pwn",
        "dirlink/sub/pwn",
        "loop/pwn",
        "itself/dirlink/pwn",
    ] {
        let prompt = json!({
            "1": {"class_type": "SaveText", "inputs": {"text": "pwned", "filename_prefix": prefix}},
        });
        let id = server.queue(&prompt, "t").await?;
        let entry = server.wait_history(&id).await?;
        assert_eq!(entry["status"]["status_str"], "error", "{prefix}: {entry}");
        let messages = entry["status"]["messages"].to_string();
        assert!(messages.contains("filename_prefix"), "{prefix}: {messages}");
    }
    outside_untouched(&outside);
    // A prefix through a link that stays inside works.
    let prompt = json!({
        "1": {"class_type": "SaveText", "inputs": {"text": "fine", "filename_prefix": "itself/ok"}},
    });
    let id = server.queue(&prompt, "t").await?;
    let entry = server.wait_history(&id).await?;
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert!(server.data_dir.join("output/ok_00001_.txt").is_file());
    Ok(())
}

#[tokio::test]
async fn served_files_are_typed_and_active_content_is_downloaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[]).await?;
    let output = dir.path().join("output");
    let files = [
        ("a.png", "image/png", "inline"),
        ("a.json", "application/json", "inline"),
        ("a.txt", "text/plain; charset=utf-8", "inline"),
        ("a.html", "application/octet-stream", "attachment"),
        ("a.svg", "application/octet-stream", "attachment"),
        ("a.unknown", "application/octet-stream", "attachment"),
        ("line\r\nbreak.txt", "text/plain; charset=utf-8", "inline"),
    ];
    for (name, _, _) in files {
        std::fs::write(output.join(name), "<script>alert(1)</script>")?;
    }
    for (name, content_type, disposition) in files {
        let r = server
            .http
            .get(server.url("/view"))
            .query(&[("filename", name), ("type", "output")])
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200, "{name:?}");
        let h = r.headers();
        assert_eq!(h["content-type"], content_type, "{name:?}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{name:?}");
        let sent = h["content-disposition"].to_str()?;
        assert!(sent.starts_with(disposition), "{name:?}: {sent}");
        assert!(!sent.contains(['\r', '\n']), "{name:?}: {sent}");
    }
    let (status, _) = server
        .post("/userdata/page.html", &json!("<script>alert(1)</script>"))
        .await?;
    assert_eq!(status, 200);
    let r = server
        .http
        .get(server.url("/userdata/page.html"))
        .send()
        .await?;
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-disposition"]
        .to_str()?
        .starts_with("attachment"));
    Ok(())
}
