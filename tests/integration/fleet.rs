//! The fleet rollout on a lab of three hosts (`scripts/fleet-lab.sh`: each its own network
//! namespace, Docker engine and sshd, reached by Ansible over SSH): a bundle whose signature
//! does not verify is loaded nowhere, `--check` changes nothing, a failing pre-upgrade hook and
//! then a failing post-upgrade smoke test on the second batch leave that host on 13 with its
//! data and the later batch unupgraded, the rollout then upgrades every host with its data,
//! and running it again changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const HOSTS: [&str; 3] = ["lab1", "lab2", "lab3"];

/// A lab of its own (directory, network and names), so that a developer's lab is left alone.
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn script(&self, args: &[&str]) -> Run {
        run(Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fleet-lab.sh"))
            .args(args)
            .env("PGUP_LAB_DIR", &self.dir)
            .env("PGUP_LAB_NET", "10.78.0")
            .env("PGUP_LAB_TAG", "pgupt")
            .env("PGUP_LAB_PGUP", env!("CARGO_BIN_EXE_pgup")))
    }

    /// `command` on `host`, over SSH; its standard output.
    fn on(&self, host: &str, command: &str) -> String {
        let r = self.script(&["exec", host, command]);
        assert_eq!(r.code, 0, "{host}: {command}: {}{}", r.stdout, r.stderr);
        r.stdout.trim().to_owned()
    }

    /// A playbook of the collection; its summary, rows in the order the upgrades ended.
    fn playbook(&self, args: &[&str]) -> (Run, Vec<serde_json::Value>) {
        let r = self.script(args);
        let path = self.dir.join(format!("{}-summary.json", args[0]));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} ({e}): {}{}", path.display(), r.stdout, r.stderr));
        let _ = std::fs::remove_file(&path);
        (r, serde_json::from_str(&text).unwrap())
    }

    /// What each host serves: its `db` container's id and image, the server's major, and a
    /// digest of the sample data.
    fn serving(&self) -> BTreeMap<&'static str, [String; 4]> {
        HOSTS
            .iter()
            .map(|h| {
                let container =
                    self.on(h, "docker inspect --format '{{.Id}} {{.Config.Image}}' db");
                let (id, image) = container.split_once(' ').unwrap();
                let sql = "SELECT current_setting('server_version_num')::int / 10000 || ' ' || \
                     (SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c) || \
                     (SELECT md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o)";
                let answer = self.on(
                    h,
                    &format!("docker exec db psql -U postgres -d shop -tAc \"{sql}\""),
                );
                let (major, digest) = answer.split_once(' ').unwrap();
                (*h, [id, image, major, digest].map(str::to_owned))
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script(&["down"]);
    }
}

fn results(summary: &[serde_json::Value]) -> Vec<(String, String)> {
    summary
        .iter()
        .map(|row| {
            (
                row["host"].as_str().unwrap().to_owned(),
                row["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Each host's `changed=` count in ansible-playbook's recap.
fn changed_counts(stdout: &str) -> Vec<(String, u32)> {
    stdout
        .lines()
        .filter(|l| HOSTS.iter().any(|h| l.starts_with(&format!("{h} "))) && l.contains("changed="))
        .map(|l| {
            let host = l.split_whitespace().next().unwrap().to_owned();
            let n = l.split("changed=").nth(1).unwrap();
            let n = n.split_whitespace().next().unwrap().parse().unwrap();
            (host, n)
        })
        .collect()
}

#[test]
fn a_fleet_rollout_on_three_hosts() {
    let lab = Lab {
        dir: PathBuf::from("/var/lib/pgup-lab-test"),
    };
    let up = lab.script(&["up", "3"]);
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert_eq!(
        up.stdout.trim(),
        lab.dir.join("inventory.ini").display().to_string()
    );
    let before = lab.serving();
    for (host, [_, image, major, _]) in &before {
        assert_eq!(
            (image.as_str(), major.as_str()),
            ("pgup/postgres:13", "13"),
            "{host}"
        );
    }
    // Each host's engine keeps its own containers and volumes, in its own data root.
    for host in HOSTS {
        let root = lab.on(host, "docker info --format '{{.DockerRootDir}}'");
        assert_eq!(
            root,
            lab.dir
                .join(format!("hosts/{host}/docker"))
                .display()
                .to_string()
        );
        let volume = lab.on(
            host,
            "docker volume inspect --format '{{.Mountpoint}}' db-data",
        );
        assert!(volume.starts_with(&root), "{host}: {volume}");
    }

    // A bundle whose signature does not verify (its sha256 file made to match): loaded nowhere.
    let bundles = lab.dir.join("bundles");
    let mut bytes = std::fs::read(bundles.join("upgrade-17.tar")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let forged = bundles.join("forged.tar");
    std::fs::write(&forged, &bytes).unwrap();
    let sum = Command::new("sha256sum").arg(&forged).output().unwrap();
    std::fs::write(bundles.join("forged.tar.sha256"), &sum.stdout).unwrap();
    std::fs::copy(
        bundles.join("upgrade-17.tar.minisig"),
        bundles.join("forged.tar.minisig"),
    )
    .unwrap();
    let forged_var = format!("pgup_bundle={}", forged.display());
    let (r, summary) = lab.playbook(&["rollout", "-e", &forged_var]);
    assert_ne!(r.code, 0);
    for (host, result) in results(&summary) {
        assert!(result.contains("signature"), "{host}: {result}");
        let has_17 = lab.on(
            &host,
            "docker image inspect pgup/postgres:17 >/dev/null 2>&1 && echo yes || echo no",
        );
        assert_eq!(has_17, "no", "{host} loaded nothing");
    }
    assert_eq!(lab.serving(), before);

    // --check: every host checked, none changed (the bundle is loaded: that changes no data
    // and no container).
    let (r, summary) = lab.playbook(&["rollout", "--check"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for (host, result) in results(&summary) {
        assert_eq!(result, "checked: would change", "{host}");
    }
    assert_eq!(lab.serving(), before, "--check changed nothing");

    // The site's hooks: every host has the directory; lab2 (the second batch) refuses.
    for host in HOSTS {
        lab.on(
            host,
            "mkdir -p /opt/pgup/hooks && chmod 755 /opt/pgup/hooks",
        );
    }
    lab.on(
        "lab2",
        "printf '#!/bin/sh\\necho replica lag too high\\nexit 1\\n' > /opt/pgup/hooks/pre-upgrade && chmod 755 /opt/pgup/hooks/pre-upgrade",
    );
    let hooks = "pgup_hooks=/opt/pgup/hooks";
    let (r, summary) = lab.playbook(&["rollout", "-e", hooks]);
    assert_ne!(r.code, 0);
    let rows = results(&summary);
    assert_eq!(
        rows[0],
        ("lab1".into(), "upgraded".into()),
        "the canary first"
    );
    assert!(
        rows[1].0 == "lab2"
            && rows[1]
                .1
                .contains("hook pre-upgrade failed (exit code 1): replica lag too high"),
        "{rows:?}"
    );
    assert_eq!(
        rows[2],
        ("lab3".into(), "checked: would change".into()),
        "not reached"
    );
    let now = lab.serving();
    assert_eq!(
        (now["lab1"][1].as_str(), now["lab1"][2].as_str()),
        ("pgup/postgres:17", "17")
    );
    assert_eq!(now["lab1"][3], before["lab1"][3], "lab1's data");
    assert_eq!(now["lab2"], before["lab2"], "lab2 as it was");
    assert_eq!(now["lab3"], before["lab3"], "lab3 never upgraded");

    // Then its smoke test fails once PostgreSQL 17 serves: pgup puts 13 back.
    lab.on(
        "lab2",
        "rm /opt/pgup/hooks/pre-upgrade && printf '#!/bin/sh\\ndocker exec \"$PGUP_CONTAINER\" psql -U postgres -d shop -tAc \"SELECT count(*) FROM customers\"\\necho the application does not start\\nexit 1\\n' > /opt/pgup/hooks/post-upgrade && chmod 755 /opt/pgup/hooks/post-upgrade",
    );
    let (r, summary) = lab.playbook(&["rollout", "-e", hooks]);
    assert_ne!(r.code, 0);
    let rows = results(&summary);
    let lab2 = &rows.iter().find(|(h, _)| h == "lab2").unwrap().1;
    assert!(
        lab2.contains("the old cluster was put back from the backup")
            && lab2
                .contains("hook post-upgrade failed (exit code 1): the application does not start"),
        "{lab2}"
    );
    let now = lab.serving();
    assert_eq!(
        now["lab2"][1..],
        before["lab2"][1..],
        "lab2 serves 13 with its data again"
    );
    assert_eq!(now["lab3"], before["lab3"], "lab3 never upgraded");

    // Without the failing hook: the rest of the fleet, in its batches.
    lab.on("lab2", "rm /opt/pgup/hooks/post-upgrade");
    let (r, summary) = lab.playbook(&["rollout", "-e", hooks]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        results(&summary),
        [
            ("lab1".into(), "unchanged: already upgraded".into()),
            ("lab2".into(), "upgraded".into()),
            ("lab3".into(), "upgraded".into()),
        ],
        "in their batches' order"
    );
    let now = lab.serving();
    for host in HOSTS {
        assert_eq!(now[host][1..3], ["pgup/postgres:17", "17"], "{host}");
        assert_eq!(now[host][3], before[host][3], "{host}: the same data");
    }

    // Again: nothing changes anywhere.
    let (r, summary) = lab.playbook(&["rollout", "-e", hooks]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let counts = changed_counts(&r.stdout);
    assert_eq!(counts.len(), 3, "{}", r.stdout);
    for (host, n) in counts {
        assert_eq!(n, 0, "{host} changed");
    }
    for (host, result) in results(&summary) {
        assert_eq!(result, "unchanged: already upgraded", "{host}");
    }
    assert_eq!(lab.serving(), now);
}
