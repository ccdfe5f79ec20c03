//! The README is read on a code host as well as on docs.rs. Its Rust blocks
//! are compiled and run as doc tests (the crate docs include the README), so
//! they must be whole programs a reader can paste: no rustdoc-hidden `# `
//! lines, which a code host shows and rustdoc hides.

#[test]
fn smoke_readme_rust_blocks_are_whole_programs() {
    let readme = include_str!("../README.md");
    let mut in_rust = false;
    let mut blocks = 0;
    for (n, line) in readme.lines().enumerate() {
        let fence = line.trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            if in_rust {
                in_rust = false;
            } else if info.starts_with("rust") {
                in_rust = true;
                blocks += 1;
            }
            continue;
        }
        if in_rust {
            let t = line.trim_start();
            assert!(
                !(t == "#" || t.starts_with("# ")),
                "README.md:{}: rustdoc-hidden line in a rust block: {line:?}",
                n + 1
            );
        }
    }
    assert!(
        blocks >= 2,
        "expected the README's rust examples, found {blocks}"
    );
}
