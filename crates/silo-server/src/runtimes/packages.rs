//! The packages in a runtime's tree, with their versions, read from the package managers'
//! own records: dpkg's status file, pip's `*.dist-info` directories, npm's package.json.

use std::path::Path;

/// `dpkg:NAME=VERSION`, `pip:NAME=VERSION`, `npm:NAME=VERSION` for each package installed
/// in `rootfs`, each group sorted. Unreadable records are left out: this describes the
/// tree, it does not check it (the manifest does).
pub fn installed(rootfs: &Path) -> Vec<String> {
    let mut packages = dpkg(rootfs);
    packages.extend(pip(rootfs));
    packages.extend(npm(rootfs));
    packages
}

fn dpkg(rootfs: &Path) -> Vec<String> {
    let Ok(status) = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")) else {
        return Vec::new();
    };
    let mut found: Vec<String> = status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            };
            let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
            if !installed {
                return None;
            }
            Some(format!("dpkg:{}={}", field("Package")?, field("Version")?))
        })
        .collect();
    found.sort();
    found
}

fn pip(rootfs: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(libs) = std::fs::read_dir(rootfs.join("usr/local/lib")) else {
        return found;
    };
    for lib in libs.flatten() {
        if !lib.file_name().to_string_lossy().starts_with("python3") {
            continue;
        }
        for site in ["dist-packages", "site-packages"] {
            let Ok(entries) = std::fs::read_dir(lib.path().join(site)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some((package, version)) = name
                    .strip_suffix(".dist-info")
                    .and_then(|stem| stem.rsplit_once('-'))
                {
                    found.push(format!("pip:{package}={version}"));
                }
            }
        }
    }
    found.sort();
    found
}

fn npm(rootfs: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let modules = rootfs.join("usr/local/lib/node_modules");
    let Ok(entries) = std::fs::read_dir(&modules) else {
        return found;
    };
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('@') {
            if let Ok(scoped) = std::fs::read_dir(entry.path()) {
                dirs.extend(scoped.flatten().map(|e| e.path()));
            }
        } else if !name.starts_with('.') {
            dirs.push(entry.path());
        }
    }
    for dir in dirs {
        let Ok(text) = std::fs::read_to_string(dir.join("package.json")) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let (Some(name), Some(version)) = (json["name"].as_str(), json["version"].as_str()) {
            found.push(format!("npm:{name}={version}"));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_come_from_dpkg_pip_and_npm_records() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::write(
            root.join("var/lib/dpkg/status"),
            "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        )
        .unwrap();
        std::fs::create_dir_all(
            root.join("usr/local/lib/python3.11/dist-packages/numpy-1.26.4.dist-info"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("usr/local/lib/node_modules/left-pad")).unwrap();
        std::fs::write(
            root.join("usr/local/lib/node_modules/left-pad/package.json"),
            r#"{"name": "left-pad", "version": "1.3.0"}"#,
        )
        .unwrap();
        assert_eq!(
            installed(root),
            [
                "dpkg:python3=3.11.2-1",
                "pip:numpy=1.26.4",
                "npm:left-pad=1.3.0"
            ]
        );
    }
}
