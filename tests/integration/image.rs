//! `pgup image save | verify | load | list` with real bundles, signed with the real minisign.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A throwaway tag of `image`, removed (the tag only) on drop.
struct Tag(String);

impl Tag {
    fn of(image: &str, repo: &str) -> Self {
        let tag = format!("pgup-test/{repo}:{}", unique("t").replace("pgup-test-", ""));
        docker(&["tag", image, &tag]);
        Tag(tag)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = docker_output(&["rmi", &self.0]);
    }
}

fn present(image: &str) -> bool {
    docker_output(&["image", "inspect", image]).status.success()
}

/// A minisign key pair without a password, as a vendor would make it.
fn keypair(dir: &Path, name: &str) -> (String, String) {
    let (public, secret) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.sec")),
    );
    let ok = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .stdout(Stdio::null())
        .status()
        .expect("minisign is installed by scripts/setup.sh");
    assert!(ok.success());
    (public.display().to_string(), secret.display().to_string())
}

fn sign(secret: &str, file: &Path) {
    let ok = Command::new("minisign")
        .args(["-S", "-s", secret, "-m"])
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A one-file image made on the spot: bundles of it are small.
fn tiny_image() -> Tag {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello"), "hello\n").unwrap();
    let tag = format!("pgup-test/tiny:{}", unique("t").replace("pgup-test-", ""));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["-c", "."])
        .output()
        .unwrap();
    let mut import = Command::new("docker")
        .args(["import", "-", &tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(import.stdin.as_mut().unwrap(), &tar.stdout).unwrap();
    assert!(import.wait().unwrap().success());
    Tag(tag)
}

#[test]
fn tampered_bundles_load_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = tiny_image();
    let bundle = d.join("tiny.tar.gz");
    let saved = pgup_json(&["image", "save", &image.0, "-o", bundle.to_str().unwrap()]);
    assert_eq!(saved["images"][0], image.0.as_str());
    let (public, secret) = keypair(d, "vendor");
    let (other_public, _) = keypair(d, "other");
    sign(&secret, &bundle);
    docker(&["rmi", &image.0]);

    let verified = pgup_json(&[
        "image",
        "verify",
        bundle.to_str().unwrap(),
        "--public-key",
        &public,
    ]);
    assert_eq!(
        verified["checked"],
        serde_json::json!(["sha256", "signature"])
    );

    let copy = |name: &str| {
        let p = d.join(name);
        std::fs::copy(&bundle, &p).unwrap();
        p
    };
    let sum = d.join("tiny.tar.gz.sha256").display().to_string();
    let flipped = copy("flipped.tar.gz");
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, &bytes).unwrap();
    let truncated = copy("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let other_file = d.join("other.txt");
    std::fs::write(&other_file, "not the bundle").unwrap();
    sign(&secret, &other_file);
    std::fs::write(
        d.join("garbage.minisig"),
        "untrusted comment: x\nnot base64\n",
    )
    .unwrap();
    let s = |p: &Path| p.display().to_string();
    let b = s(&bundle);
    let other_sig = s(&d.join("other.txt.minisig"));
    let garbage = s(&d.join("garbage.minisig"));
    let (fl, tr) = (s(&flipped), s(&truncated));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&fl, "--sha256", &sum], "does not match its sha256"),
        (vec![&tr, "--sha256", &sum], "does not match its sha256"),
        (
            vec![&b, "--public-key", &other_public],
            "signed with another key",
        ),
        (
            vec![&b, "--public-key", &public, "--signature", &other_sig],
            "signature of",
        ),
        (
            vec![&b, "--public-key", &public, "--signature", &garbage],
            "is not a minisign signature",
        ),
        (vec![&fl], "nothing to verify"),
    ];
    for (args, message) in cases {
        pgup(&[&["image", "load"], args.as_slice()].concat()).assert_user_error(message);
        assert!(!present(&image.0), "nothing loaded after: {args:?}");
    }
    let loaded = pgup_json(&["image", "load", &b, "--public-key", &public]);
    assert_eq!(loaded["images"], serde_json::json!([image.0.as_str()]));
    assert!(present(&image.0));
}

#[test]
fn save_errors_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    pgup(&[
        "image",
        "save",
        "pgup-test/nosuch:1",
        "-o",
        dir.path().join("x.tar").to_str().unwrap(),
    ])
    .assert_user_error("there is no image pgup-test/nosuch:1 here");
    pgup(&[
        "image",
        "save",
        "pgup/upgrade:latest",
        "-o",
        "/nonexistent/dir/x.tar",
    ])
    .assert_user_error("cannot write /nonexistent/dir/x.tar");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Save → remove → load (verified, memory measured) → an upgrade with the loaded image.
#[tokio::test]
async fn round_trip_of_a_gigabyte_bundle_then_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let upgrade_image = Tag::of("pgup/upgrade:latest", "upgrade");
    let server_image = Tag::of("pgup/postgres:13", "postgres");
    let bundle = dir.path().join("bundle.tar");
    pgup_json(&[
        "image",
        "save",
        &upgrade_image.0,
        &server_image.0,
        "-o",
        bundle.to_str().unwrap(),
    ]);
    let size = std::fs::metadata(&bundle).unwrap().len();
    assert!(size > 1_000_000_000, "a bundle of at least 1 GB: {size}");
    let (public, secret) = keypair(dir.path(), "vendor");
    sign(&secret, &bundle);
    docker(&["rmi", &upgrade_image.0, &server_image.0]);

    let child = Command::new(env!("CARGO_BIN_EXE_pgup"))
        .args([
            "image",
            "load",
            bundle.to_str().unwrap(),
            "--public-key",
            &public,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while let Ok(text) = std::fs::read_to_string(&status) {
        if let Some(kb) = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if text.contains("State:\tZ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("pgup image load of {size} bytes: peak RSS {peak_kb} kB");
    assert!(peak_kb > 0 && peak_kb < 64 * 1024, "peak RSS {peak_kb} kB");
    let loaded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let upgrades = loaded["upgrades"][0][1].as_array().unwrap();
    assert!(upgrades.contains(&serde_json::json!("13→17")), "{loaded}");
    let list = pgup_json(&["image", "list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["image"] == upgrade_image.0.as_str())
    );

    // The loaded images do an upgrade.
    let mut spec = ServerSpec::new("pgup/postgres:13");
    spec.user = "postgres";
    let s = Server::start(spec).await;
    s.seed("postgres").await;
    let before = s.content().await;
    s.stop();
    pgup_json(&[
        "upgrade",
        "--container",
        &s.name,
        "--to",
        "15",
        "--image",
        &upgrade_image.0,
        "--yes",
    ]);
    let on_15 = s.attach("pgup/postgres:15", &s.mount, &[]).await;
    assert_eq!(on_15.content().await, before);
}
