//! The crate's layers depend one way: the wire format uses neither the
//! server, the client nor the bounds; the server and the client do not
//! use each other. Read from the sources, so that a new `use` that breaks
//! the layering fails here rather than in review.

use std::fs;
use std::path::Path;

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("source");
            out.push((path.display().to_string(), text));
        }
    }
    out
}

fn assert_no_use(dir: &str, forbidden: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let files = sources(&root);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    for (path, text) in files {
        for bad in forbidden {
            assert!(!text.contains(bad), "{path} uses {bad}");
        }
    }
}

#[test]
fn the_wire_format_uses_nothing_above_it() {
    assert_no_use(
        "wire",
        &[
            "crate::server",
            "crate::client",
            "crate::bounds",
            "crate::io",
            "tokio::net",
            "tokio::time",
        ],
    );
}

#[test]
fn the_server_and_the_client_do_not_use_each_other() {
    assert_no_use("server", &["crate::client"]);
    let client = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/client.rs"))
        .expect("client source");
    assert!(
        !client.contains("crate::server"),
        "the client uses the server"
    );
}
