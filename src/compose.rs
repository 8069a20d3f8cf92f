//! Containers Compose manages (v1 `docker-compose` and v2 `docker compose` label them alike):
//! which project and service, the compose files by absolute path, the lines to change in
//! them, and how pgup keeps an old container out of Compose's sight. Compose adopts every
//! container labelled with the project and service, so the container kept for rollback carries
//! those labels under pgup's prefix, and gets them back when a rollback puts it back. Pure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What every Compose label starts with.
const COMPOSE: &str = "com.docker.compose.";
/// What a Compose label of a container pgup keeps aside becomes prefixed with.
const HIDDEN: &str = "org.pgup.hidden.";

/// The Compose service a container belongs to (or, hidden, belonged to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub project: String,
    pub service: String,
    /// The compose files, absolute.
    pub files: Vec<PathBuf>,
}

impl Service {
    /// The service from a container's labels, whether they are Compose's or hidden by pgup.
    pub fn of(labels: &HashMap<String, String>) -> Option<Self> {
        let get = |key: &str| {
            labels
                .get(&format!("{COMPOSE}{key}"))
                .or_else(|| labels.get(&format!("{HIDDEN}{COMPOSE}{key}")))
        };
        let dir = get("project.working_dir").map(PathBuf::from);
        let files = get("project.config_files")
            .map(|f| {
                f.split(',')
                    .filter(|f| !f.is_empty())
                    .map(|f| match &dir {
                        Some(dir) if Path::new(f).is_relative() => dir.join(f),
                        _ => PathBuf::from(f),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            project: get("project")?.clone(),
            service: get("service")?.clone(),
            files,
        })
    }

    /// "service db of project shop (/srv/shop/docker-compose.yml)".
    pub fn describe(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let files = if files.is_empty() {
            "its compose file".to_owned()
        } else {
            files.join(", ")
        };
        format!(
            "service {} of project {} ({files})",
            self.service, self.project
        )
    }

    /// The change to make in the compose file after an upgrade: `image:`, PGDATA when the new
    /// image would look elsewhere for the data, `command:` when pgup changed it.
    pub fn upgrade_hint(
        &self,
        image: &str,
        pgdata: Option<&Path>,
        command: Option<&[String]>,
    ) -> String {
        let mut lines = vec![format!("image: {image}")];
        if let Some(p) = pgdata {
            lines.push(format!("environment: PGDATA: {}", p.display()));
        }
        if let Some(c) = command {
            lines.push(format!("command: {c:?}"));
        }
        format!(
            "Compose: in {}, set {}; until then `docker compose up` leaves the upgraded container alone, but a re-created service would run the old image, which does not start on the upgraded data.",
            self.describe(),
            lines
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The change back after a rollback.
    pub fn rollback_hint(&self, image: &str) -> String {
        format!(
            "Compose: in {}, set `image: {image}` again and take out what the upgrade had you add (PGDATA, command), so that `docker compose up` keeps this container.",
            self.describe()
        )
    }
}

/// Whether any of `labels` makes Compose adopt the container.
pub fn is_visible(labels: &HashMap<String, String>) -> bool {
    labels.keys().any(|k| k.starts_with(COMPOSE))
}

/// Whether `labels` holds Compose labels pgup hid.
pub fn is_hidden(labels: &HashMap<String, String>) -> bool {
    labels.keys().any(|k| k.starts_with(HIDDEN))
}

/// `labels` with Compose's moved under pgup's prefix: Compose no longer sees the container.
pub fn hide(labels: &HashMap<String, String>) -> HashMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| match k.starts_with(COMPOSE) {
            true => (format!("{HIDDEN}{k}"), v.clone()),
            false => (k.clone(), v.clone()),
        })
        .collect()
}

/// `labels` with hidden Compose labels given back.
pub fn reveal(labels: &HashMap<String, String>) -> HashMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.strip_prefix(HIDDEN).unwrap_or(k).to_owned(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn service_with_absolute_files() {
        let l = labels(&[
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "db"),
            ("com.docker.compose.project.working_dir", "/srv/shop"),
            (
                "com.docker.compose.project.config_files",
                "docker-compose.yml,/etc/override.yml",
            ),
            ("other", "x"),
        ]);
        let s = Service::of(&l).unwrap();
        assert_eq!(s.project, "shop");
        assert_eq!(
            s.files,
            [
                PathBuf::from("/srv/shop/docker-compose.yml"),
                PathBuf::from("/etc/override.yml")
            ]
        );
        assert!(is_visible(&l) && !is_hidden(&l));
        let hidden = hide(&l);
        assert!(!is_visible(&hidden) && is_hidden(&hidden));
        assert_eq!(hidden["other"], "x");
        assert_eq!(Service::of(&hidden), Some(s.clone()), "still known to pgup");
        assert_eq!(reveal(&hidden), l);
        assert_eq!(Service::of(&labels(&[("other", "x")])), None);

        let hint = s.upgrade_hint("pg:17", Some(Path::new("/var/lib/postgresql/data")), None);
        assert!(hint.starts_with("Compose: in service db of project shop (/srv/shop/docker-compose.yml, /etc/override.yml), set `image: pg:17`, `environment: PGDATA: /var/lib/postgresql/data`;"), "{hint}");
        assert!(
            s.rollback_hint("pg:13")
                .contains("set `image: pg:13` again")
        );
    }
}
