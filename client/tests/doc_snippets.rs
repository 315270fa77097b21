//! docs/android.md's Rust `loadInto` client is `examples/load_into.rs`, which the workspace
//! builds: the page's fenced block must equal the example's marked region byte for byte, so the
//! page cannot drift from code that compiles. (Its C++ client is compiled by
//! tools/android/aosp-checks, stage e.)

const DOC: &str = include_str!("../../docs/android.md");
const EXAMPLE: &str = include_str!("../examples/load_into.rs");

/// The text between the two lines `// ---- docs/android.md begin` / `end` of the example.
fn example_region() -> &'static str {
    let begin = "// ---- docs/android.md begin\n";
    let start = EXAMPLE.find(begin).expect("the example has a begin marker") + begin.len();
    let len = EXAMPLE[start..]
        .find("// ---- docs/android.md end\n")
        .expect("the example has an end marker");
    &EXAMPLE[start..start + len]
}

/// The ```rust block after "Rust:" in the page's loadInto section.
fn doc_block() -> &'static str {
    let section = "### Filling a buffer the client already owns";
    let from = DOC
        .find(section)
        .expect("docs/android.md has the loadInto section");
    let open = "Rust:\n\n```rust\n";
    let start = from + DOC[from..].find(open).expect("a Rust block in it") + open.len();
    let len = DOC[start..].find("```\n").expect("the block is closed");
    &DOC[start..start + len]
}

#[test]
fn the_docs_rust_load_into_client_is_the_example_the_workspace_builds() {
    let (doc, example) = (doc_block(), example_region());
    assert!(
        doc.contains("fn reload_weights(") && doc.contains(".loadInto("),
        "the page's block is not the loadInto client:\n{doc}"
    );
    if doc != example {
        let line = doc
            .lines()
            .zip(example.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(doc.lines().count().min(example.lines().count()));
        panic!(
            "docs/android.md's Rust loadInto block differs from client/examples/load_into.rs \
             from line {} of the block: copy the example's region into the page\n--- doc\n{doc}\n--- example\n{example}",
            line + 1
        );
    }
}
