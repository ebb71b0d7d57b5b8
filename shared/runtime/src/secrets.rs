//! Secrets kept off command lines. Every local user can read a process's
//! arguments (`ps`, `/proc/PID/cmdline`); only its owner can read its
//! environment. A database URL with a password therefore comes from an
//! environment variable or a file, never from a flag.

use std::ffi::OsStr;
use std::path::Path;

/// Whether `url` carries a password: `scheme://user:password@host/…`, or
/// a `password=` query parameter.
pub fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = rest.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.to_ascii_lowercase().starts_with("password="))
    });
    in_userinfo || in_query
}

/// The first of `flags` that `args` (a command line, program first) gives
/// a URL with a password, as `--flag URL` or `--flag=URL`.
pub fn password_on_command_line<'f, A: AsRef<OsStr>>(
    args: impl IntoIterator<Item = A>,
    flags: &[&'f str],
) -> Option<&'f str> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    for (i, arg) in args.iter().enumerate() {
        for flag in flags {
            let value = match arg.strip_prefix(flag) {
                Some("") => args.get(i + 1).map(String::as_str),
                Some(v) => v.strip_prefix('='),
                None => None,
            };
            if value.is_some_and(has_password) {
                return Some(flag);
            }
        }
    }
    None
}

/// The message for a password found on the command line with `flag`.
pub fn password_on_command_line_error(flag: &str, env: &str) -> String {
    format!(
        "{flag} carries a password, and every local user can read a command line: \
         give the URL in the environment variable {env} or in a file with {flag}-file PATH"
    )
}

/// Most of a secret file that is read: a URL is far shorter, and a path
/// to something endless (`/dev/zero`) must not hang the start.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The secret held in the file at `path`: its first line, without the
/// line end. An error names the file.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let failed = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut raw = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut raw))
        .map_err(failed)?;
    if raw.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{} is longer than {MAX_SECRET_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let text =
        String::from_utf8(raw).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_userinfo_and_query() {
        assert!(has_password("postgres://mentat:s3cret@db:5432/mentat"));
        assert!(has_password("postgres://mentat:@db/mentat"));
        assert!(has_password("postgres://db/mentat?user=m&password=x"));
        assert!(has_password(
            "postgres://db/mentat?sslmode=require&PASSWORD=x"
        ));
        assert!(!has_password("postgres://mentat@db:5432/mentat"));
        assert!(!has_password("postgres://db:5432/mentat"));
        assert!(!has_password("sqlite:///var/lib/mentat/a:b@c.db"));
        assert!(!has_password("sqlite://.mentat/mentat.db"));
        assert!(!has_password("not a url"));
    }

    #[test]
    fn flags_with_a_password_are_named() {
        let flags = ["--database-url", "--migrate-url"];
        let line = |args: &[&str]| password_on_command_line(args.iter(), &flags);
        assert_eq!(
            line(&["p", "--database-url", "postgres://u:p@db/m"]),
            Some("--database-url")
        );
        assert_eq!(
            line(&["p", "--migrate-url=postgres://u:p@db/m"]),
            Some("--migrate-url")
        );
        assert_eq!(line(&["p", "--database-url", "postgres://u@db/m"]), None);
        assert_eq!(line(&["p", "--database-url-file", "/run/secret"]), None);
        assert_eq!(line(&["p", "--database-url"]), None);
    }

    #[test]
    fn a_secret_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgres://u:p@db/m\n").unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), "postgres://u:p@db/m");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret_file(&path).unwrap_err().contains("is empty"));
        std::fs::write(&path, vec![b'x'; 64 * 1024 + 1]).unwrap();
        assert!(read_secret_file(&path).unwrap_err().contains("longer than"));
        assert!(read_secret_file(Path::new("/dev/zero"))
            .unwrap_err()
            .contains("longer than"));
        let missing = dir.path().join("none");
        assert!(read_secret_file(&missing).unwrap_err().contains("none"));
    }
}
