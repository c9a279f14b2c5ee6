//! Keeps the Markdown documentation true to the tree: every file path and every Rust
//! item it names in backticks (or links to) must exist, and every excerpt it quotes from
//! the code must still read as the code does.
//!
//! Checked: `README.md`, `engine/README.md`, `glow/README.md` (if there is one),
//! `shaders/README.md`, `data/cifar10-sample/README.md` and every Markdown file under
//! `docs/`, at any depth. Fenced code blocks are not searched for references (they hold
//! commands and examples); excerpts are the one kind of block that is read.
//!
//! - A **path** is a code span (or a relative link target) of path characters that
//!   contains a `/` or ends in one of [`EXTENSIONS`]. It must exist relative to the
//!   Markdown file's folder or to the repository root; with a trailing `/` it must be a
//!   folder. [`skip_path`] lists what is not a repository path.
//! - A **Rust item** is a code span written as a path with `::` (`Tensor::conv2d`,
//!   `engine::vulkan::VulkanOptions`, `Backend::` for the trait itself), a macro
//!   (`device_test!`), a call without arguments (`backward()`) or `fn name`. Each of its
//!   segments must be defined somewhere in the workspace's `.rs` files (as a fn, struct,
//!   enum, enum variant, trait, type, const, static, mod, `macro_rules!` or public field),
//!   except the crate roots and external names in [`NOT_OURS`]. Single words such as
//!   `conv2d` are not checked: in prose they are as often op names or variables.
//! - An **excerpt** is a fenced block right below a line `<!-- excerpt: PATH -->`
//!   (`docs/tour.md` quotes the code this way). Its lines must appear in the file PATH
//!   (found as a path is, above) in order, each equal to a file line once leading and
//!   trailing whitespace are trimmed, and contiguous except that a line `// ...` skips
//!   any number of file lines. See [`match_excerpt`].
//! - A **diff** is a fenced block right below `<!-- diff: PATH -->` (the tour's exercise
//!   shows each step as one): its `-` lines are dropped and the rest, without the `+` or
//!   space in front, is checked as an excerpt of PATH as it is now. See [`DIFF_OPEN`].
//!
//! Run with `cargo test --test docs`; every broken reference is printed with its file,
//! line and reason, and every drifted excerpt with its file, block and first line that
//! no longer matches.

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Endings that make a code span without a `/` a file name.
const EXTENSIONS: &[&str] = &[
    "rs", "md", "comp", "glsl", "toml", "lock", "spv", "md5", "py", "json", "png",
];

/// Folders that exist only after a build, a run or a download (all git-ignored), so
/// the docs may name them and what is in them.
const GENERATED: &[&str] = &["target/", "runs/", "data/cifar-10-batches-bin/"];

/// Placeholder file names the docs use for "any kernel", "a folder of your choice" etc.
const PLACEHOLDERS: &[&str] = &["NAME", "DIR", "FILE"];

/// Crate roots of the workspace and the relative roots: not items in any `.rs` file, so
/// they are dropped from the front of a path and the rest is checked.
const OUR_ROOTS: &[&str] = &[
    "engine", "glow", "glow_rs", "crate", "self", "super", "Self",
];

/// First segments that exempt a whole path: the standard library, primitive types and
/// the external crates the workspace uses. Their items are not ours to define.
const NOT_OURS: &str = "std core alloc f32 f64 u8 u32 u64 usize i32 i64 \
    ndarray matrixmultiply rayon rand rand_distr ash gpu_allocator shaderc safetensors \
    serde serde_json clap png ureq";

/// Macros of the standard library the docs may name.
const STD_MACROS: &str = "vec format println eprintln assert assert_eq";

/// The Markdown files checked, relative to the repository root.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "engine/README.md",
        "shaders/README.md",
        "data/cifar10-sample/README.md",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if root.join("glow/README.md").is_file() {
        files.push("glow/README.md".into());
    }
    let mut docs = Vec::new();
    walk(root, Path::new("docs"), &mut |p| {
        if p.extension().is_some_and(|e| e == "md") {
            docs.push(p.to_path_buf());
        }
    });
    docs.sort();
    files.extend(docs);
    files
}

/// Calls `f` on every file under `root/dir` (paths relative to `root`), skipping hidden
/// folders and `target/`.
fn walk(root: &Path, dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = dir.join(&*name);
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !name.starts_with('.') && name != "target" {
                walk(root, &rel, f);
            }
        } else if kind.is_file() {
            f(&rel);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Markdown: code spans and link targets.

/// Where a reference was found and what it is.
#[derive(Debug, Clone, PartialEq)]
struct Span {
    line: usize,
    text: String,
    /// A link target rather than a code span.
    link: bool,
}

/// The code spans and link targets of `markdown`, outside fenced code blocks, with the
/// line each starts on. A code span may run over several lines (its line breaks become
/// spaces, as in CommonMark).
fn spans(markdown: &str) -> Vec<Span> {
    // Prose only: fenced blocks become empty lines, so line numbers stay right.
    let mut prose = String::new();
    let mut fence: Option<String> = None;
    for line in markdown.lines() {
        let marker = fence_marker(line);
        match (&fence, marker) {
            (Some(open), Some(marker)) if closes(open, &marker) => fence = None,
            (Some(_), _) => {}
            (None, Some(marker)) => fence = Some(marker),
            (None, None) => prose.push_str(line),
        }
        prose.push('\n');
    }

    let chars: Vec<char> = prose.chars().collect();
    let mut out = Vec::new();
    let mut outside = String::new(); // prose with the code spans blanked, for links
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '`' {
            let run = chars[i..].iter().take_while(|&&c| c == '`').count();
            // The closing run: the next run of exactly the same length.
            let mut j = i + run;
            let mut close = None;
            while j < chars.len() {
                if chars[j] == '`' {
                    let n = chars[j..].iter().take_while(|&&c| c == '`').count();
                    if n == run {
                        close = Some(j);
                        break;
                    }
                    j += n;
                } else {
                    j += 1;
                }
            }
            if let Some(j) = close {
                let body: String = chars[i + run..j].iter().collect();
                out.push(Span {
                    line,
                    text: body.replace('\n', " ").trim().to_string(),
                    link: false,
                });
                for &c in &chars[i..j + run] {
                    outside.push(if c == '\n' { '\n' } else { ' ' });
                    line += usize::from(c == '\n');
                }
                i = j + run;
                continue;
            }
            // An unmatched run is literal text.
            outside.extend(&chars[i..i + run]);
            i += run;
            continue;
        }
        line += usize::from(chars[i] == '\n');
        outside.push(chars[i]);
        i += 1;
    }

    // Inline links `[text](target "title")`.
    for (n, text) in outside.lines().enumerate() {
        let mut rest = text;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if !target.is_empty() {
                out.push(Span {
                    line: n + 1,
                    text: target.to_string(),
                    link: true,
                });
            }
            rest = &after[end..];
        }
    }
    out.sort_by_key(|s| s.line);
    out
}

/// The run of backticks or tildes that opens or closes a fenced code block on `line`, if
/// the line is a fence (at least three, indented by at most three spaces).
fn fence_marker(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    let marker: String = trimmed
        .chars()
        .take_while(|&c| c == '`' || c == '~')
        .collect();
    (marker.len() >= 3 && line.len() - trimmed.len() <= 3).then_some(marker)
}

/// Whether a fence `marker` closes the block that `open` opened.
fn closes(open: &str, marker: &str) -> bool {
    marker.starts_with(open)
}

// ---------------------------------------------------------------------------------------
// What a span refers to.

#[derive(Debug, Clone, PartialEq)]
enum Reference {
    /// A file or folder (a trailing `/` means a folder).
    Path(String),
    /// A Rust path, split at `::`; `macro` when written `name!`.
    Item {
        segments: Vec<String>,
        is_macro: bool,
    },
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What `span` names, if it looks like a path or a Rust item.
fn classify(span: &Span) -> Option<Reference> {
    let text = span.text.as_str();
    if span.link {
        // Only the file part of a link; `#anchor` alone is a heading on the same page.
        let file = text.split('#').next().unwrap_or("");
        return (!file.is_empty()).then(|| Reference::Path(file.to_string()));
    }
    if let Some(item) = classify_item(text) {
        return Some(item);
    }
    let path_chars = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./*{}".contains(c));
    // (`.comp` alone has no extension to `Path`: it is a file name's ending, not a file.)
    let named_file = Path::new(text)
        .extension()
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e == *x));
    let looks_like_path = text.contains('/') || named_file;
    (path_chars && looks_like_path).then(|| Reference::Path(text.to_string()))
}

/// A Rust item: `a::b::c`, `a::b::` (the item `a::b`), `name!`, `name()`, `a::b(args)`
/// or `fn name`.
fn classify_item(text: &str) -> Option<Reference> {
    if let Some(name) = text.strip_prefix("fn ") {
        return is_identifier(name).then(|| Reference::Item {
            segments: vec![name.to_string()],
            is_macro: false,
        });
    }
    let (mut path, is_macro, call) = if let Some(p) = text.strip_suffix('!') {
        (p, true, None)
    } else if let (Some(open), true) = (text.find('('), text.ends_with(')')) {
        (&text[..open], false, Some(&text[open + 1..text.len() - 1]))
    } else {
        (text, false, None)
    };
    if let Some(p) = path.strip_suffix("::") {
        path = p;
    }
    let segments: Vec<String> = path.split("::").map(str::to_string).collect();
    if !segments.iter().all(|s| is_identifier(s)) {
        return None;
    }
    // One bare word is an item only as a macro or an argument-free call: `relu_grad(dy, x)`
    // or `sigmoid(x)` are as often formulas.
    let qualified = segments.len() > 1 || text.ends_with("::");
    let counts = qualified || is_macro || call.is_some_and(|args| args.trim().is_empty());
    counts.then_some(Reference::Item { segments, is_macro })
}

/// Why `path` (as written in the Markdown file in folder `md_dir`) is not a repository
/// path to check, if it is not.
fn skip_path(path: &str, md_dir: &Path) -> Option<&'static str> {
    // Links to the web: checking them would need the network.
    if path.contains("://") || path.starts_with("mailto:") {
        return Some("a URL");
    }
    // `shaders/*.comp`, `samples/step*_t*.png`: a family of files, possibly empty.
    if path.contains('*') {
        return Some("a glob pattern");
    }
    // `spirv/NAME.spv`, `.{name}.tmp.{pid}`: stands for a name the reader supplies.
    let placeholder = path
        .split(['/', '.'])
        .any(|part| PLACEHOLDERS.contains(&part));
    if placeholder || path.contains('{') {
        return Some("a placeholder");
    }
    // `C/2`, `1/n_bins`: a fraction, not a path.
    if path
        .split('/')
        .any(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
    {
        return Some("a fraction");
    }
    let Some(from_root) = normalise(&md_dir.join(path)) else {
        // Such as `../shared/`, which is beside the checkout, not in it.
        return Some("outside the repository");
    };
    if GENERATED.iter().any(|g| {
        let g = Path::new(g.trim_end_matches('/'));
        from_root.starts_with(g) || Path::new(path).starts_with(g)
    }) {
        return Some("written by a build, a run or a download");
    }
    None
}

/// `path` (relative to the repository root) with `.` and `..` resolved, or `None` where
/// it leaves the repository.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Rust definitions.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The identifiers and punctuation of Rust source, without comments, strings,
/// character literals, lifetimes and numbers.
fn tokens(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    while i < n {
        let ch = c[i];
        if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            while i < n && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if (ch == 'r' || (ch == 'b' && at(i + 1) == 'r'))
            && !is_ident_char(at(i.wrapping_sub(1)))
            && {
                let k = i + if ch == 'b' { 2 } else { 1 };
                let hashes = c[k.min(n)..].iter().take_while(|&&h| h == '#').count();
                at(k + hashes) == '"'
            }
        {
            // A raw string: r"..." or r#"..."# (also b-prefixed).
            let k = i + if ch == 'b' { 2 } else { 1 };
            let hashes = c[k..].iter().take_while(|&&h| h == '#').count();
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body_start = k + hashes + 1;
            let rest: String = c[body_start..].iter().collect();
            i = match rest.find(&closing) {
                Some(end) => body_start + rest[..end].chars().count() + closing.chars().count(),
                None => n,
            };
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character literal: past the quote, the backslash and the
                // escaped character, then to the closing quote.
                i += 3;
                while i < n && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3; // 'x'
            } else {
                // A lifetime or label.
                i += 1;
                while i < n && is_ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < n && (is_ident_char(c[i]) || c[i] == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while i < n && is_ident_char(c[i]) {
                i += 1;
            }
            let mut word: String = c[start..i].iter().collect();
            if word == "r" && at(i) == '#' && is_ident_char(at(i + 1)) {
                // A raw identifier, r#type.
                let start = i + 1;
                i = start;
                while i < n && is_ident_char(c[i]) {
                    i += 1;
                }
                word = c[start..i].iter().collect();
            } else if word == "b" && at(i) == '"' {
                continue; // a byte string: the next round skips it
            } else if word == "b" && at(i) == '\'' {
                continue; // a byte literal
            }
            out.push(Token::Ident(word));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token::PathSep);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Token::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names defined in a workspace: items, enum variants, public fields, macros.
#[derive(Debug, Default)]
struct Definitions {
    names: HashSet<String>,
    macros: HashSet<String>,
}

impl Definitions {
    /// Every definition in the `.rs` files under `root` (outside `target/` and hidden
    /// folders).
    fn of_workspace(root: &Path) -> Definitions {
        let mut defs = Definitions::default();
        walk(root, Path::new(""), &mut |p| {
            if p.extension().is_some_and(|e| e == "rs") {
                let src = std::fs::read_to_string(root.join(p)).unwrap_or_default();
                defs.add_source(&src);
            }
        });
        defs
    }

    fn add_source(&mut self, src: &str) {
        let t = tokens(src);
        let ident = |k: usize| match t.get(k) {
            Some(Token::Ident(s)) => Some(s.as_str()),
            _ => None,
        };
        for k in 0..t.len() {
            let Some(word) = ident(k) else { continue };
            match word {
                "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "mod"
                | "union" => {
                    let mut name_at = k + 1;
                    if ident(name_at) == Some("mut") {
                        name_at += 1;
                    }
                    if let Some(name) = ident(name_at) {
                        self.names.insert(name.to_string());
                        if word == "enum" {
                            self.add_variants(&t, name_at + 1);
                        }
                    }
                }
                "macro_rules" if t.get(k + 1) == Some(&Token::Punct('!')) => {
                    if let Some(name) = ident(k + 2) {
                        self.macros.insert(name.to_string());
                    }
                }
                "pub" => {
                    // `pub name: Type` or `pub(crate) name: Type`: a field.
                    let mut m = k + 1;
                    if t.get(m) == Some(&Token::Punct('(')) {
                        while m < t.len() && t[m] != Token::Punct(')') {
                            m += 1;
                        }
                        m += 1;
                    }
                    if let (Some(name), Some(Token::Punct(':'))) = (ident(m), t.get(m + 1)) {
                        self.names.insert(name.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    /// The variants of the enum whose body starts at or after token `from`.
    fn add_variants(&mut self, t: &[Token], from: usize) {
        let Some(open) = (from..t.len()).find(|&k| t[k] == Token::Punct('{')) else {
            return;
        };
        let (mut depth, mut expect_name, mut k) = (0usize, true, open + 1);
        while k < t.len() {
            match &t[k] {
                Token::Punct('{' | '(' | '[') => depth += 1,
                Token::Punct('}' | ')' | ']') if depth == 0 => return,
                Token::Punct('}' | ')' | ']') => depth -= 1,
                Token::Punct('#') if depth == 0 => {} // an attribute follows
                Token::Punct(',') if depth == 0 => expect_name = true,
                Token::Ident(name) if depth == 0 && expect_name => {
                    self.names.insert(name.clone());
                    expect_name = false;
                }
                _ => {}
            }
            k += 1;
        }
    }

    /// Why `segments` does not name something defined here, if it does not.
    fn check(&self, segments: &[String], is_macro: bool) -> Option<String> {
        let mut rest = segments;
        while let Some((first, tail)) = rest.split_first() {
            if !OUR_ROOTS.contains(&first.as_str()) {
                break;
            }
            rest = tail;
        }
        let first = rest.first()?;
        if NOT_OURS.split_whitespace().any(|name| name == first) {
            return None;
        }
        let (last, earlier) = rest.split_last()?;
        for segment in earlier {
            if !self.names.contains(segment) {
                return Some(format!("`{segment}` is defined nowhere in the workspace"));
            }
        }
        if is_macro {
            let known =
                self.macros.contains(last) || STD_MACROS.split_whitespace().any(|m| m == last);
            return (!known).then(|| format!("no `macro_rules! {last}` in the workspace"));
        }
        (!self.names.contains(last))
            .then(|| format!("`{last}` is defined nowhere in the workspace"))
    }
}

// ---------------------------------------------------------------------------------------
// The check.

/// A reference that names nothing.
#[derive(Debug)]
struct Broken {
    file: PathBuf,
    line: usize,
    span: String,
    why: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file.display(),
            self.line,
            self.span,
            self.why
        )
    }
}

/// What was checked in one run.
#[derive(Debug, Default)]
struct Tally {
    paths: usize,
    items: usize,
    broken: Vec<Broken>,
}

/// Checks the references of `markdown`, the text of `file` (relative to `root`).
fn check_markdown(root: &Path, file: &Path, markdown: &str, defs: &Definitions, tally: &mut Tally) {
    let md_dir = file.parent().unwrap_or(Path::new(""));
    for span in spans(markdown) {
        let why = match classify(&span) {
            None => None,
            Some(Reference::Path(path)) => {
                if skip_path(&path, md_dir).is_some() {
                    continue;
                }
                tally.paths += 1;
                check_path(root, md_dir, &path)
            }
            Some(Reference::Item { segments, is_macro }) => {
                tally.items += 1;
                defs.check(&segments, is_macro)
            }
        };
        if let Some(why) = why {
            tally.broken.push(Broken {
                file: file.to_path_buf(),
                line: span.line,
                span: span.text.clone(),
                why,
            });
        }
    }
}

/// Why `path` exists neither beside the Markdown file nor from the root, if it does not.
fn check_path(root: &Path, md_dir: &Path, path: &str) -> Option<String> {
    let want_dir = path.ends_with('/');
    let rel = Path::new(path.trim_end_matches('/'));
    let mut candidates = vec![md_dir.join(rel)];
    if !md_dir.as_os_str().is_empty() {
        candidates.push(rel.to_path_buf());
    }
    let found = candidates.iter().any(|c| {
        normalise(c).is_some_and(|c| {
            let full = root.join(c);
            if want_dir {
                full.is_dir()
            } else {
                full.exists()
            }
        })
    });
    if found {
        return None;
    }
    let what = if want_dir {
        "no such folder"
    } else {
        "no such file or folder"
    };
    let places = if md_dir.as_os_str().is_empty() {
        "from the repository root".to_string()
    } else {
        format!("in {}/ or from the repository root", md_dir.display())
    };
    Some(format!("{what} ({places})"))
}

// ---------------------------------------------------------------------------------------
// Excerpts: quoted source that must match its file.

/// The comment that marks the fenced block on the next line as an excerpt of a file:
/// `<!-- excerpt: engine/src/autograd.rs -->`.
const EXCERPT_OPEN: &str = "<!-- excerpt:";
const EXCERPT_CLOSE: &str = "-->";

/// The comment that marks the fenced block on the next line as a diff hunk of a file as
/// it is now (`<!-- diff: engine/src/backend.rs -->`, the tour's exercise): its `-`
/// lines are dropped, the `+` or space in front of the others is stripped, and what is
/// left is checked like an excerpt, so every added line must still be in the file.
const DIFF_OPEN: &str = "<!-- diff:";

/// The new file's lines of a diff hunk: context and added lines, without their prefix.
fn diff_new_side(line: &str) -> Option<String> {
    match line.chars().next() {
        Some('-') => None,
        Some('+') | Some(' ') => Some(line[1..].to_string()),
        _ => Some(line.to_string()),
    }
}

/// An excerpt line that stands for any number of file lines left out.
const GAP: &str = "// ...";

/// A fenced block quoted from a source file.
#[derive(Debug, Clone, PartialEq)]
struct Excerpt {
    /// The quoted file, as the marker writes it.
    source: String,
    /// The marker's line in the Markdown file.
    line: usize,
    /// The block's lines (without its fences), each with its line in the Markdown file.
    lines: Vec<(usize, String)>,
}

/// The excerpts of `markdown`, and the markers that do not introduce one (a marker must
/// sit on the line just above a fence, and the block must close). Markers inside other
/// fenced blocks are text, not markers.
fn excerpts(markdown: &str) -> (Vec<Excerpt>, Vec<(usize, String)>) {
    let lines: Vec<&str> = markdown.lines().collect();
    let closing = |open: &str, from: usize| {
        (from..lines.len()).find(|&j| fence_marker(lines[j]).is_some_and(|m| closes(open, &m)))
    };
    let (mut found, mut problems) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        if let Some(open) = fence_marker(lines[i]) {
            // An ordinary fenced block: skip it whole.
            i = closing(&open, i + 1).map_or(lines.len(), |j| j + 1);
            continue;
        }
        let marker = lines[i].trim();
        let is_diff = marker.starts_with(DIFF_OPEN);
        let Some(source) = marker
            .strip_prefix(EXCERPT_OPEN)
            .or_else(|| marker.strip_prefix(DIFF_OPEN))
            .and_then(|rest| rest.strip_suffix(EXCERPT_CLOSE))
        else {
            i += 1;
            continue;
        };
        let (marker_line, source) = (i + 1, source.trim().to_string());
        let Some(open) = lines.get(i + 1).and_then(|l| fence_marker(l)) else {
            problems.push((
                marker_line,
                "the line below an excerpt marker must open a fenced code block".to_string(),
            ));
            i += 1;
            continue;
        };
        let Some(end) = closing(&open, i + 2) else {
            problems.push((
                marker_line,
                "the excerpt's code block is never closed".to_string(),
            ));
            break;
        };
        found.push(Excerpt {
            source,
            line: marker_line,
            lines: (i + 2..end)
                .filter_map(|j| match is_diff {
                    true => diff_new_side(lines[j]).map(|l| (j + 1, l)),
                    false => Some((j + 1, lines[j].to_string())),
                })
                .collect(),
        });
        i = end + 1;
    }
    (found, problems)
}

/// Where an excerpt stops matching its file.
#[derive(Debug, Clone, PartialEq)]
struct Divergence {
    /// Index (into the excerpt's lines) of the first line that does not match.
    at: usize,
    /// The file line that stands where that line was expected (1-based, and its text),
    /// when the lines before it in the same run matched somewhere.
    instead: Option<(usize, String)>,
}

/// Checks that the `excerpt` lines appear in `source` in order, each equal to a file line
/// after trimming whitespace, and contiguous except where a [`GAP`] line skips any number
/// of file lines (the first run may start anywhere).
///
/// Runs between gaps are placed greedily, each at its earliest match after the previous
/// one: an earlier place never leaves less room for the runs after it, so this finds a
/// placement whenever there is one. When a run matches nowhere, the place where most of
/// its leading lines match shows which line diverged.
fn match_excerpt(excerpt: &[&str], source: &str) -> Result<(), Divergence> {
    let file: Vec<&str> = source.lines().map(str::trim).collect();
    // Runs of (index in the excerpt, trimmed line) between gaps.
    let mut runs: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (k, line) in excerpt.iter().enumerate() {
        if line.trim() == GAP {
            runs.push(Vec::new());
        } else {
            runs.last_mut().expect("never empty").push((k, line.trim()));
        }
    }
    let mut from = 0;
    for run in runs.iter().filter(|r| !r.is_empty()) {
        let matched_at = |p: usize| {
            run.iter()
                .zip(&file[p..])
                .take_while(|((_, want), have)| want == *have)
                .count()
        };
        match (from..file.len()).find(|&p| matched_at(p) == run.len()) {
            Some(p) => from = p + run.len(),
            None => {
                // The first place with the longest matching prefix.
                let (mut p, mut n) = (from, 0);
                for q in from..file.len() {
                    let m = matched_at(q);
                    if m > n {
                        (p, n) = (q, m);
                    }
                }
                let instead = file
                    .get(p + n)
                    .filter(|_| n > 0)
                    .map(|text| (p + n + 1, text.to_string()));
                return Err(Divergence {
                    at: run[n].0,
                    instead,
                });
            }
        }
    }
    Ok(())
}

/// Checks every excerpt of `markdown`, the text of `file`; `read` returns the text of a
/// path relative to the repository root, if there is such a file. The quoted file is
/// looked up beside the Markdown file, then from the root. Adds what is broken to
/// `broken` in line order and returns the number of excerpts found.
fn check_excerpts(
    file: &Path,
    markdown: &str,
    read: &dyn Fn(&Path) -> Option<String>,
    broken: &mut Vec<Broken>,
) -> usize {
    let md_dir = file.parent().unwrap_or(Path::new(""));
    let mut found_broken = Vec::new();
    let mut report = |line: usize, span: &str, why: String| {
        found_broken.push(Broken {
            file: file.to_path_buf(),
            line,
            span: span.to_string(),
            why,
        })
    };
    let (found, problems) = excerpts(markdown);
    for (line, why) in problems {
        report(line, EXCERPT_OPEN, why);
    }
    for excerpt in &found {
        let candidates = [md_dir.join(&excerpt.source), PathBuf::from(&excerpt.source)];
        let Some(source) = candidates
            .iter()
            .filter_map(|c| normalise(c))
            .find_map(|c| read(&c))
        else {
            let why = "the excerpt names a file that does not exist".to_string();
            report(excerpt.line, &excerpt.source, why);
            continue;
        };
        let lines: Vec<&str> = excerpt.lines.iter().map(|(_, l)| l.as_str()).collect();
        if lines.iter().all(|l| l.trim().is_empty() || l.trim() == GAP) {
            report(
                excerpt.line,
                &excerpt.source,
                "the excerpt quotes nothing".to_string(),
            );
            continue;
        }
        if let Err(d) = match_excerpt(&lines, &source) {
            let (line, text) = &excerpt.lines[d.at];
            let instead = match &d.instead {
                Some((n, have)) => format!("; line {n} of the file reads `{have}`"),
                None => "; no line of the file matches it there".to_string(),
            };
            let why = format!(
                "the excerpt of {} (marker at line {}) no longer matches its file{instead}",
                excerpt.source, excerpt.line
            );
            report(*line, text.trim(), why);
        }
    }
    found_broken.sort_by_key(|b| b.line);
    broken.extend(found_broken);
    found.len()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn documentation_names_only_what_exists() {
    let root = repo_root();
    let defs = Definitions::of_workspace(&root);
    let mut tally = Tally::default();
    for file in markdown_files(&root) {
        match std::fs::read_to_string(root.join(&file)) {
            Ok(text) => check_markdown(&root, &file, &text, &defs, &mut tally),
            Err(e) => tally.broken.push(Broken {
                file: file.clone(),
                line: 0,
                span: file.display().to_string(),
                why: format!("cannot read the file: {e}"),
            }),
        }
    }
    for broken in &tally.broken {
        eprintln!("{broken}");
    }
    eprintln!(
        "checked {} paths and {} Rust items; {} broken",
        tally.paths,
        tally.items,
        tally.broken.len()
    );
    assert!(
        tally.broken.is_empty(),
        "{} broken references in the documentation (listed above)",
        tally.broken.len()
    );
    // A parser that finds nothing would pass silently.
    assert!(
        tally.paths > 50 && tally.items > 10,
        "too few references found"
    );
}

#[test]
fn every_excerpt_matches_its_source() {
    let root = repo_root();
    let read = |p: &Path| std::fs::read_to_string(root.join(p)).ok();
    let mut broken = Vec::new();
    let mut blocks = 0;
    for file in markdown_files(&root) {
        if let Some(text) = read(&file) {
            blocks += check_excerpts(&file, &text, &read, &mut broken);
        }
    }
    for b in &broken {
        eprintln!("{b}");
    }
    eprintln!("checked {blocks} excerpts; {} broken", broken.len());
    assert!(
        broken.is_empty(),
        "{} excerpts no longer match their files (listed above)",
        broken.len()
    );
    // docs/tour.md quotes the code at every stop: finding none means the parser broke.
    assert!(blocks >= 10, "too few excerpts found ({blocks})");
}

// ---------------------------------------------------------------------------------------
// The checker itself.

fn check_text(file: &str, markdown: &str) -> Tally {
    let root = repo_root();
    let defs = Definitions::of_workspace(&root);
    let mut tally = Tally::default();
    check_markdown(&root, Path::new(file), markdown, &defs, &mut tally);
    tally
}

#[test]
fn reports_missing_paths_and_items() {
    let md = "# Synthetic\n\
              A missing file `engine/src/no_such_file.rs`, a missing folder `glow/no_such/`,\n\
              a [missing link](docs/no-such-page.md#intro), a missing method\n\
              `Tensor::no_such_op`, a missing type `NoSuchType::new`, a missing macro\n\
              `no_such_macro!`, a missing call `no_such_fn()` and `fn no_such_body`.\n";
    let tally = check_text("README.md", md);
    let reported: Vec<(&str, usize)> = tally
        .broken
        .iter()
        .map(|b| (b.span.as_str(), b.line))
        .collect();
    assert_eq!(
        reported,
        [
            ("engine/src/no_such_file.rs", 2),
            ("glow/no_such/", 2),
            ("docs/no-such-page.md#intro", 3),
            ("Tensor::no_such_op", 4),
            ("NoSuchType::new", 4),
            ("no_such_macro!", 5),
            ("no_such_fn()", 5),
            ("fn no_such_body", 5),
        ],
        "{:#?}",
        tally.broken
    );
    assert!(tally.broken[4].why.contains("`NoSuchType`"));
    // A folder must be a folder.
    let tally = check_text("README.md", "`engine/README.md/`");
    assert_eq!(tally.broken.len(), 1, "{:#?}", tally.broken);
}

#[test]
fn accepts_what_exists_and_skips_what_is_not_a_repository_path() {
    let md = "# Synthetic\n\
              Beside this file `src/tensor.rs` and `../shaders/`, from the root\n\
              `tests/gradcheck.rs` and `shaders/README.md`, a bare `README.md`, a folder\n\
              `src/cpu/`, a [link](../docs/checkpoint-format.md).\n\
              Items: `Tensor::conv2d_relu`, `engine::vulkan::VulkanOptions`,\n\
              `Fused::affine_coupling`, `Backend::`, `BinaryOp::ReluGrad`,\n\
              `glow::checkpoint::load_checkpoint`, `GlowConfig::hidden`,\n\
              `glow::data::default_data_dir()`, `device_test!`, `fn body`, `backward()`,\n\
              `std::f32::consts::LN_2`, `ndarray::Array4`.\n\
              Not repository paths: [a site](https://example.org/x.md), `runs/cifar10/loss.png`,\n\
              `../target/debug/`, `shaders/*.comp`, `spirv/NAME.spv`, `C/2`,\n\
              `../../shared/glow-spec.md`, `flow.layers.{i}.actnorm.bias`, `.comp`.\n\
              Not items: `conv2d`, `relu_grad(dy, x)`, `sigmoid(h + 2)`, `[B, C, H, W]`.\n\
              ```sh\n\
              cat engine/src/not_checked_in_a_fence.rs\n\
              ```\n\
              [an anchor](#synthetic)\n";
    let tally = check_text("engine/README.md", md);
    assert!(tally.broken.is_empty(), "{:#?}", tally.broken);
    assert_eq!((tally.paths, tally.items), (7, 13));
}

#[test]
fn code_spans_cross_lines_and_skip_fences() {
    let md = "a `one`\n``two ` three``\n```\n`fenced`\n```\n`four\nfive` [l](x.md)\n";
    let got: Vec<(usize, String, bool)> = spans(md)
        .into_iter()
        .map(|s| (s.line, s.text, s.link))
        .collect();
    assert_eq!(
        got,
        [
            (1, "one".to_string(), false),
            (2, "two ` three".to_string(), false),
            (6, "four five".to_string(), false),
            (7, "x.md".to_string(), true),
        ]
    );
}

#[test]
fn definitions_come_from_code_not_comments_or_strings() {
    let src = r##"
        // fn in_a_comment() {}
        /* struct InABlock; /* nested */ fn still_comment() {} */
        const S: &str = "fn in_a_string() {}";
        const R: &str = r#"fn in_a_raw_string() "quoted" {}"#;
        fn lifetimes<'a>(x: &'a str) -> char { 'x' }
        pub(crate) enum Op { Plain, #[doc = "x"] Tuple(u8, (u8, u8)), Named { inner: u8 }, Last = 3 }
        pub struct Config { pub hidden: usize, private: usize }
        macro_rules! my_macro { () => {}; }
        static mut COUNTER: u32 = 0;
    "##;
    let mut defs = Definitions::default();
    defs.add_source(src);
    for name in [
        "S",
        "R",
        "lifetimes",
        "Op",
        "Plain",
        "Tuple",
        "Named",
        "Last",
        "Config",
        "hidden",
        "COUNTER",
    ] {
        assert!(
            defs.names.contains(name),
            "{name} missing from {:?}",
            defs.names
        );
    }
    for name in [
        "in_a_comment",
        "InABlock",
        "still_comment",
        "in_a_string",
        "in_a_raw_string",
        "inner",
        "private",
        "a",
    ] {
        assert!(!defs.names.contains(name), "{name} wrongly found");
    }
    assert!(defs.macros.contains("my_macro"));
}

/// A source file for the excerpt checks below.
const SOURCE: &str = "\
//! A module.

fn first() -> u32 {
    let a = 1;
    let b = 2;
    a + b
}

fn second() {
    println!(\"two\");
}
";

#[test]
fn excerpts_match_in_order_with_gaps_and_any_indentation() {
    // A whole function, indented differently.
    assert_eq!(
        match_excerpt(
            &["fn first() -> u32 {", "let a = 1;", "  let b = 2;"],
            SOURCE
        ),
        Ok(())
    );
    // A gap skips lines; a leading gap is allowed.
    let gapped = [
        "// ...",
        "fn first() -> u32 {",
        "// ...",
        "a + b",
        "// ...",
        "println!(\"two\");",
    ];
    assert_eq!(match_excerpt(&gapped, SOURCE), Ok(()));
    // Blank lines are lines too.
    assert_eq!(match_excerpt(&["}", "", "fn second() {"], SOURCE), Ok(()));
}

#[test]
fn excerpts_that_drifted_from_their_file_are_reported() {
    // A changed line: the first two match, the third reads otherwise in the file.
    let changed = ["fn first() -> u32 {", "let a = 1;", "let b = 3;"];
    assert_eq!(
        match_excerpt(&changed, SOURCE),
        Err(Divergence {
            at: 2,
            instead: Some((5, "let b = 2;".to_string())),
        })
    );
    // Lines left out without a gap: not contiguous.
    let skipped = ["let a = 1;", "a + b"];
    assert_eq!(
        match_excerpt(&skipped, SOURCE),
        Err(Divergence {
            at: 1,
            instead: Some((5, "let b = 2;".to_string())),
        })
    );
    // Out of order: the second run would have to come before the first.
    let swapped = ["fn second() {", "// ...", "fn first() -> u32 {"];
    assert_eq!(
        match_excerpt(&swapped, SOURCE),
        Err(Divergence {
            at: 2,
            instead: None,
        })
    );
}

#[test]
fn excerpt_blocks_are_found_checked_and_reported_with_their_line() {
    let md = "\
# Synthetic

<!-- excerpt: src/synthetic.rs -->
```rust,ignore
fn first() -> u32 {
    // ...
    a + b
}
```

A block that has drifted:

<!-- excerpt: src/synthetic.rs -->
```rust,ignore
fn second() {
    println!(\"three\");
}
```

```md
<!-- excerpt: src/inside_a_fence_is_text.rs -->
```

<!-- excerpt: src/no_such_file.rs -->
```rust,ignore
fn missing() {}
```

<!-- excerpt: src/synthetic.rs -->

(a marker without its block)
";
    let read = |p: &Path| (p == Path::new("src/synthetic.rs")).then(|| SOURCE.to_string());
    let mut broken = Vec::new();
    let blocks = check_excerpts(Path::new("docs/synthetic.md"), md, &read, &mut broken);
    assert_eq!(blocks, 3);
    let reported: Vec<(usize, &str)> = broken.iter().map(|b| (b.line, b.span.as_str())).collect();
    assert_eq!(
        reported,
        [
            (16, "println!(\"three\");"),
            (24, "src/no_such_file.rs"),
            (29, EXCERPT_OPEN),
        ],
        "{broken:#?}"
    );
    let drifted = broken[0].to_string();
    assert!(
        drifted.contains("docs/synthetic.md:16")
            && drifted.contains("(marker at line 13)")
            && drifted.contains("line 10 of the file reads `println!(\"two\");`"),
        "{drifted}"
    );
    // The same path, resolved beside the Markdown file: `../src/` from `docs/`.
    let md = "<!-- excerpt: ../src/synthetic.rs -->\n```rust,ignore\nfn second() {\n```\n";
    let mut broken = Vec::new();
    assert_eq!(
        check_excerpts(Path::new("docs/x.md"), md, &read, &mut broken),
        1
    );
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn diff_blocks_are_checked_on_their_new_side() {
    // The removed line is not in the file and is ignored; the context and added lines
    // are, in order.
    let md = "\
<!-- diff: src/synthetic.rs -->
```diff
 fn first() -> u32 {
-    let a = 0;
+    let a = 1;
+    let b = 2;
```

<!-- diff: src/synthetic.rs -->
```diff
 fn first() -> u32 {
+    let c = 3;
```
";
    let read = |p: &Path| (p == Path::new("src/synthetic.rs")).then(|| SOURCE.to_string());
    let mut broken = Vec::new();
    assert_eq!(
        check_excerpts(Path::new("docs/d.md"), md, &read, &mut broken),
        2
    );
    let reported: Vec<(usize, &str)> = broken.iter().map(|b| (b.line, b.span.as_str())).collect();
    assert_eq!(reported, [(12, "let c = 3;")], "{broken:#?}");
}
