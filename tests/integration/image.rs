//! `pgup image save | verify | load | list` with real bundles, signed with the real minisign.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A throwaway image tag, removed (the tag only) on drop.
struct Tag(String);

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
    image_of(&[("hello", "hello\n")], &[])
}

/// An image holding `files` (path, content), with Dockerfile `changes`.
fn image_of(files: &[(&str, &str)], changes: &[&str]) -> Tag {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let tag = format!("pgup-test/tiny:{}", unique("t").replace("pgup-test-", ""));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["-c", "."])
        .output()
        .unwrap();
    let mut import = Command::new("docker")
        .arg("import")
        .args(changes.iter().flat_map(|c| ["--change", c]))
        .args(["-", &tag])
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
fn a_bundle_carries_files_written_out_only_once_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = tiny_image();
    let collection = d.join("pgup-fleet-1.0.0.tar.gz");
    let content: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&collection, &content).unwrap();
    let s = |p: &Path| p.display().to_string();
    let (public, secret) = keypair(d, "vendor");
    for bundle in [d.join("carry.tar"), d.join("carry.tar.gz")] {
        let b = s(&bundle);
        let c = s(&collection);
        pgup_json(&["image", "save", &image.0, "--include", &c, "-o", &b]);
        sign(&secret, &bundle);
        let out = d.join("out");
        let verified = pgup_json(&[
            "image",
            "verify",
            &b,
            "--public-key",
            &public,
            "--extract",
            &s(&out),
        ]);
        let written = out.join("pgup-fleet-1.0.0.tar.gz");
        assert_eq!(verified["extracted"], serde_json::json!([s(&written)]));
        assert_eq!(std::fs::read(&written).unwrap(), content, "{b}");
        std::fs::remove_dir_all(&out).unwrap();

        // One byte changed in the carried file: the bundle does not verify, nothing is written.
        let mut bytes = std::fs::read(&bundle).unwrap();
        if !b.ends_with(".gz") {
            let at = bytes.windows(4).position(|w| w == &content[..4]).unwrap();
            bytes[at + 100] ^= 0x01;
        } else {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
        }
        let flipped = d.join("flipped.tar");
        std::fs::write(&flipped, &bytes).unwrap();
        std::fs::copy(format!("{b}.minisig"), d.join("flipped.tar.minisig")).unwrap();
        let r = pgup(&[
            "image",
            "verify",
            &s(&flipped),
            "--public-key",
            &public,
            "--extract",
            &s(&out),
        ]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(names_in(&out), Vec::<String>::new(), "nothing written");
        // The images load as from any bundle: docker ignores the carried files.
        docker(&["rmi", &image.0]);
        pgup_json(&["image", "load", &b, "--public-key", &public]);
        assert!(present(&image.0));
    }
    let out = s(&d.join("out"));
    // What is carried is code to run: a checksum beside the bundle is not enough.
    let carry = s(&d.join("carry.tar"));
    let r = pgup(&["image", "verify", &carry, "--extract", &out]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // A bundle that carries nothing says so.
    let bare = d.join("bare.tar");
    pgup_json(&["image", "save", &image.0, "-o", &s(&bare)]);
    sign(&secret, &bare);
    pgup(&[
        "image",
        "verify",
        &s(&bare),
        "--public-key",
        &public,
        "--extract",
        &out,
    ])
    .assert_user_error("carries no files");
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
        "pgup/postgres:17",
        "-o",
        "/nonexistent/dir/x.tar",
    ])
    .assert_user_error("cannot write /nonexistent/dir/x.tar");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Assemble → save → remove → load (verified, memory measured) → an upgrade that uses the
/// loaded toolbox rather than assembling another, into 19 (a sid image) from the 15 image
/// whose server runs as uid 70. The pair is this test's own, so removing its toolbox disturbs
/// no other test.
#[tokio::test]
async fn assemble_save_remove_load_then_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let toolbox = Tag(format!(
        "pgup-test/toolbox:{}",
        unique("t").replace("pgup-test-", "")
    ));
    let assembled = assemble(
        "pgup/postgres:15-uid70",
        "pgup/postgres:19",
        &["-t", &toolbox.0, "--json"],
    );
    assert_eq!(assembled.code, 0, "{}", assembled.stderr);
    let assembled: serde_json::Value = serde_json::from_str(&assembled.stdout).unwrap();
    assert_eq!(assembled["image"], toolbox.0.as_str(), "{assembled}");
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &toolbox.0]);
    let bundle = dir.path().join("bundle.tar");
    pgup_json(&["image", "save", &toolbox.0, "-o", bundle.to_str().unwrap()]);
    let size = std::fs::metadata(&bundle).unwrap().len();
    assert!(size > 500_000_000, "a bundle of at least 500 MB: {size}");
    let (public, secret) = keypair(dir.path(), "vendor");
    sign(&secret, &bundle);
    // Every tag of it, so that only the bundle holds it.
    docker(&["rmi", "-f", &id]);
    assert!(!present(&id));

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
    assert!(upgrades.contains(&serde_json::json!("15→19")), "{loaded}");
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &toolbox.0]),
        id
    );
    let list = pgup_json(&["image", "list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|i| i["image"] == toolbox.0.as_str())
    );

    // The loaded toolbox does the upgrade: found by the images it was assembled from.
    let mut s = Server::start(ServerSpec::new("pgup/postgres:15-uid70")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let run = pgup(&upgrade_on(&s.name, "19", "pgup/postgres:19"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("assembling"), "{}", run.stderr);
    s.refresh_port();
    assert_eq!(&s.setting("server_version_num").await[..2], "19");
    assert_eq!(s.content().await, before);
}

/// What cannot be assembled is refused with one line, and no image is made.
#[test]
fn assembling_refuses_what_cannot_work() {
    let not_a_server = tiny_image();
    assemble("pgup/postgres:13", &not_a_server.0, &[])
        .assert_user_error("names no PostgreSQL major");
    assemble("pgup/postgres:17", "pgup/postgres:13", &[])
        .assert_user_error("not newer than pgup/postgres:17's 17");
    assemble("pgup/postgres:13", "pgup-test/nosuch:17", &[])
        .assert_user_error("image pgup-test/nosuch:17 is not here");
    // An Alpine-like image: musl's dynamic linker, and the official images' PG_MAJOR.
    let musl = image_of(&[("lib/ld-musl-x86_64.so.1", "")], &["ENV PG_MAJOR=17"]);
    assemble("pgup/postgres:13", &musl.0, &[])
        .assert_user_error(&format!("image {} is built on musl (Alpine)", musl.0));
    for new in [&not_a_server.0, &musl.0] {
        let label = format!("label=org.pgup.new-image={new}");
        assert_eq!(
            docker(&["images", "-q", "--filter", &label]),
            "",
            "no image was made"
        );
    }
}

/// An old image that cannot run its own server (a library gone): the smoke test names the
/// library, and the toolbox it was testing is removed.
#[test]
fn a_toolbox_that_does_not_work_is_named_and_removed() {
    let broken = Tag(format!(
        "pgup-test/broken:{}",
        unique("t").replace("pgup-test-", "")
    ));
    let mut build = Command::new("docker")
        .args(["build", "-q", "--network", "none", "-t", &broken.0, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        build.stdin.as_mut().unwrap(),
        b"FROM pgup/postgres:13\nRUN rm /usr/lib/x86_64-linux-gnu/libicuuc.so.67*\n",
    )
    .unwrap();
    drop(build.stdin.take());
    assert!(build.wait().unwrap().success());
    let run = assemble(&broken.0, "pgup/postgres:17", &[]);
    run.assert_user_error("does not work, so it was removed");
    assert!(
        run.stderr.contains("postgres 13 does not run") && run.stderr.contains("libicuuc.so.67"),
        "{}",
        run.stderr
    );
    let label = format!("label=org.pgup.old-image={}", broken.0);
    assert_eq!(docker(&["images", "-q", "--filter", &label]), "");
}

/// `image save -o` writes only new or regular files: a device node or a directory named by
/// mistake is refused in one line and left as it was; `-o -` writes the bundle to standard
/// output, for a pipe.
#[test]
fn image_save_writes_only_regular_files() {
    use std::os::unix::fs::FileTypeExt;
    pgup(&["image", "save", "pgup/postgres:13", "-o", "/dev/full"])
        .assert_user_error("/dev/full exists and is not a regular file");
    assert!(
        std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(!Path::new("/dev/full.partial").exists());
    let dir = std::env::temp_dir().join(unique("save-dir"));
    std::fs::create_dir(&dir).unwrap();
    pgup(&[
        "image",
        "save",
        "pgup/postgres:13",
        "-o",
        dir.to_str().unwrap(),
    ])
    .assert_user_error("exists and is not a regular file");
    assert!(dir.is_dir() && std::fs::read_dir(&dir).unwrap().next().is_none());
    std::fs::remove_dir(&dir).unwrap();

    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} image save pgup/postgres:13 -o - | tar -t | grep -c '^manifest.json$'",
            env!("CARGO_BIN_EXE_pgup")
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
}
