//! The Markdown links of README.md and docs/: each relative link names a file that
//! exists, and each `#anchor` a heading of that file, as GitHub makes anchors from
//! headings. The docs cite each other's sections by link (the performance journal
//! alone has hundreds of dated headings), and a renamed heading breaks them silently.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// GitHub's anchor for a heading: lower case, every character but letters, digits,
/// `_`, `-` and spaces dropped (so a time range's en dash too), spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown text's headings (outside code blocks); a repeated one
/// gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = HashSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let Some(heading) = heading.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        let slug = slug(heading);
        let count = seen.entry(slug.clone()).or_default();
        anchors.insert(match *count {
            0 => slug,
            n => format!("{slug}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// Each link target `](target)` of a Markdown text, with its line number.
fn links(text: &str) -> Vec<(usize, &str)> {
    let mut links = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            links.push((number + 1, &after[..end]));
            rest = &after[end..];
        }
    }
    links
}

/// Every broken relative link among `files` (name → text), as `file:line: target`.
fn broken(files: &HashMap<PathBuf, String>) -> Vec<String> {
    let anchors: HashMap<&PathBuf, HashSet<String>> = files
        .iter()
        .map(|(path, text)| (path, anchors(text)))
        .collect();
    let mut broken = Vec::new();
    for (path, text) in files {
        for (line, target) in links(text) {
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                path.clone()
            } else {
                normalize(&path.parent().unwrap_or(Path::new("")).join(file))
            };
            let found = match anchors.get(&linked) {
                Some(headings) => anchor.is_empty() || headings.contains(anchor),
                // Not Markdown (a source file, a directory): it has to exist.
                None => {
                    anchor.is_empty()
                        && Path::new(env!("CARGO_MANIFEST_DIR")).join(&linked).exists()
                }
            };
            if !found {
                broken.push(format!("{}:{line}: {target}", path.display()));
            }
        }
    }
    broken.sort();
    broken
}

/// `a/b/../c` as `a/c`.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal
}

#[test]
fn every_link_in_the_readme_and_docs_names_a_file_and_heading_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = HashMap::new();
    let mut names = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().ends_with(".md") {
            names.push(Path::new("docs").join(name));
        }
    }
    for name in names {
        let text = std::fs::read_to_string(root.join(&name)).unwrap();
        files.insert(name, text);
    }
    assert!(files.len() >= 5, "README.md and the docs were read");
    let broken = broken(&files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_link_to_a_missing_heading_or_file_is_found() {
    assert_eq!(
        slug("Where it stands (2026-12-06, 08:42 UTC)"),
        "where-it-stands-2026-12-06-0842-utc"
    );
    assert_eq!(
        slug("The MCP proxy, bench by bench"),
        "the-mcp-proxy-bench-by-bench"
    );
    let files = HashMap::from([
        (
            PathBuf::from("docs/a.md"),
            "# Title\n\n## Allocator and LTO (2026-12-05, 06:03–06:56 UTC)\n\n## Twice\n\n## Twice\n\n\
             [ok](#title) [ok](b.md#only) [ok](#twice-1) [ok](#allocator-and-lto-2026-12-05-06030656-utc)\n\
             [bad](#allocator-and-lto-2026-12-05-0603-0656-utc) [bad](b.md#gone) [bad](c.md)\n\
             ```\n# not a heading\n```\n[bad](#not-a-heading)\n"
                .to_owned(),
        ),
        (PathBuf::from("docs/b.md"), "## Only\n".to_owned()),
    ]);
    assert_eq!(
        broken(&files),
        [
            "docs/a.md:10: #allocator-and-lto-2026-12-05-0603-0656-utc",
            "docs/a.md:10: b.md#gone",
            "docs/a.md:10: c.md",
            "docs/a.md:14: #not-a-heading",
        ]
    );
}
