//! The host's allow-list of programs (`--allow-command PATTERN`, repeatable):
//! defence in depth against a service file whose `run.command` is not what
//! this host should ever run, whoever applied it.
//!
//! A replica's program is looked up as the process would be (on the
//! replica's `PATH` when it has no `/`), its real path taken (symlinks and
//! `..` resolved), and that path matched against each pattern: `*` is any
//! run of characters but `/`, `?` one character but `/`, `**` any run of
//! characters, `/` included. `/usr/bin/*` allows every program directly in
//! `/usr/bin`; `/srv/app/**` everything under `/srv/app`. Patterns are
//! absolute paths. The program allowed is then started by that real path,
//! so that what runs is what was checked.

use std::path::{Path, PathBuf};

/// The patterns a host allows; empty means every program is allowed.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    patterns: Vec<String>,
}

/// Longest pattern accepted.
pub const MAX_PATTERN_BYTES: usize = 4096;

impl AllowList {
    /// The list, or why a pattern is unusable (not absolute, empty, too long).
    pub fn new(patterns: Vec<String>) -> Result<Self, String> {
        for p in &patterns {
            if !p.starts_with('/') || p.len() > MAX_PATTERN_BYTES {
                return Err(format!(
                    "`{p}` must be an absolute path pattern (starting with /) of at most {MAX_PATTERN_BYTES} bytes"
                ));
            }
        }
        Ok(AllowList { patterns })
    }

    /// Whether any program may run (no pattern given).
    pub fn allows_all(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The real path of `program` when a pattern allows it; otherwise why
    /// it may not run. `path_var` is the replica's `PATH`.
    pub fn check(&self, program: &str, path_var: Option<&str>) -> Result<PathBuf, String> {
        let found = resolve(program, path_var)?;
        let real = std::fs::canonicalize(&found)
            .map_err(|e| format!("`{program}`: cannot resolve {}: {e}", found.display()))?;
        let text = real.to_string_lossy();
        if self.patterns.iter().any(|p| matches(p, &text)) {
            return Ok(real);
        }
        Err(format!(
            "`{program}` ({text}) is not allowed on this host (--allow-command {})",
            self.patterns.join(", ")
        ))
    }
}

/// Where `program` is: itself when it names a path, else the first
/// executable file of that name in `path_var` (the executor's `PATH` when
/// the replica sets none).
fn resolve(program: &str, path_var: Option<&str>) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let inherited = std::env::var("PATH").unwrap_or_default();
    let dirs = path_var.unwrap_or(&inherited);
    std::env::split_paths(dirs)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("`{program}` is not found on PATH"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `path` matches the glob `pattern` (see the module).
pub fn matches(pattern: &str, path: &str) -> bool {
    glob(pattern.as_bytes(), path.as_bytes())
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => {
            let end = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
            (0..=end).any(|i| glob(rest, &s[i..]))
        }
        [b'?', rest @ ..] => matches!(s, [c, tail @ ..] if *c != b'/' && glob(rest, tail)),
        [c, rest @ ..] => matches!(s, [d, tail @ ..] if d == c && glob(rest, tail)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_paths_as_documented() {
        let table = [
            ("/usr/bin/*", "/usr/bin/python3", true),
            ("/usr/bin/*", "/usr/bin/sub/x", false),
            ("/usr/bin/*", "/usr/binx", false),
            ("/srv/app/**", "/srv/app/releases/v2/web", true),
            ("/srv/app/bin/web", "/srv/app/bin/web", true),
            ("/srv/app/bin/web", "/srv/app/bin/web2", false),
            ("/srv/app/bin/w?b", "/srv/app/bin/web", true),
            ("/srv/app/bin/w?b", "/srv/app/bin/w/b", false),
            ("/opt/*/bin/*", "/opt/x/bin/y", true),
            ("/opt/*/bin/*", "/opt/x/y/bin/z", false),
            ("/bin/sh", "/bin/bash", false),
            ("*", "/bin/sh", false),
        ];
        for (pattern, path, expected) in table {
            assert_eq!(matches(pattern, path), expected, "{pattern} {path}");
        }
    }

    #[test]
    fn a_program_is_checked_by_its_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let allowed = real.join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        let app = allowed.join("app");
        std::fs::write(&app, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
        let list = AllowList::new(vec![format!("{}/*", allowed.display())]).unwrap();
        // By its path, and by its name on the replica's PATH
        assert_eq!(list.check(app.to_str().unwrap(), None).unwrap(), app);
        let path_var = allowed.display().to_string();
        assert_eq!(list.check("app", Some(&path_var)).unwrap(), app);
        // A symlink in the allowed directory to a program elsewhere is refused
        std::os::unix::fs::symlink("/bin/sh", allowed.join("sh")).unwrap();
        let e = list.check("sh", Some(&path_var)).unwrap_err();
        assert!(e.contains("is not allowed on this host"), "{e}");
        // And so is `..` out of it, and a program elsewhere
        let dotdot = format!("{}/../allowed/../../bin/sh", allowed.display());
        assert!(list.check(&dotdot, None).is_err());
        assert!(list.check("/bin/sh", None).is_err());
        assert!(list
            .check("no-such-program", Some(&path_var))
            .unwrap_err()
            .contains("not found"));
        // A relative or empty pattern is refused at start
        assert!(AllowList::new(vec!["bin/*".into()]).is_err());
        assert!(AllowList::new(vec![String::new()]).is_err());
        assert!(AllowList::new(Vec::new()).unwrap().allows_all());
    }
}
