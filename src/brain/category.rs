//! The category of an edited file, from its path (spec §5.1): what `/correct` reports for a
//! correction and `/tag-delta` for an edit. The five names are the ones lessons and the cloud
//! payload already use.
//!
//! The suffix is taken as Python's `Path(p).suffix.lower()` takes it: from the last path
//! component, after its last dot, not for a name that only starts with a dot (`.env` has none,
//! `x.env` has `.env`, `a.tar.gz` has `.gz`), and lower-cased with full Unicode case mapping
//! (so the Kelvin sign `K` lower-cases to an ASCII `k`, as in Python). Pure: no I/O.

use std::path::Path;

/// A file's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Category {
    /// Source code.
    Code,
    /// Prose and documentation.
    Content,
    /// Configuration files.
    Config,
    /// Web front-end files.
    Frontend,
    /// Anything else, including an empty path.
    General,
}

impl Category {
    /// The category of `file_path`, by its suffix.
    pub fn of(file_path: &str) -> Category {
        // Rust's `extension` agrees with Python's `suffix` on which names have one (a leading
        // dot alone is not a suffix; `..` and a trailing `/.` are not names); it differs only
        // for a trailing dot (`x.`: Rust gives "", Python none), which is General either way.
        let suffix = Path::new(file_path)
            .extension()
            .and_then(|suffix| suffix.to_str())
            .map(str::to_lowercase)
            .unwrap_or_default();
        match suffix.as_str() {
            "py" | "js" | "ts" | "tsx" | "jsx" | "rs" | "go" | "java" | "rb" | "c" | "cpp"
            | "h" | "cs" | "swift" | "kt" => Category::Code,
            "md" | "txt" | "rst" => Category::Content,
            "json" | "yaml" | "yml" | "toml" | "ini" | "env" => Category::Config,
            "html" | "css" | "scss" | "vue" | "svelte" => Category::Frontend,
            _ => Category::General,
        }
    }

    /// The upper-case name lessons and payloads use.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Code => "CODE",
            Category::Content => "CONTENT",
            Category::Config => "CONFIG",
            Category::Frontend => "FRONTEND",
            Category::General => "GENERAL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_category_follows_pythons_suffix() {
        let cases = [
            ("src/main.rs", Category::Code),
            ("a/b/App.TSX", Category::Code),
            ("lib.kt", Category::Code),
            ("x.h", Category::Code),
            ("notes.md", Category::Content),
            ("README.rst", Category::Content),
            ("config/app.yaml", Category::Config),
            ("prod.env", Category::Config),
            ("..env", Category::Config), // Python: name "..env", suffix ".env"
            (".env", Category::General), // a leading dot alone is no suffix
            ("dir.py/.env", Category::General),
            ("site.scss", Category::Frontend),
            ("App.svelte", Category::Frontend),
            ("a.tar.gz", Category::General), // only the last suffix
            ("a.md.bak", Category::General),
            ("src/main.rs/", Category::Code), // a trailing slash is not part of the name
            ("src/main.rs/.", Category::Code),
            ("x.py/..", Category::General), // the name is "..": no suffix
            ("x.", Category::General),
            ("Makefile", Category::General),
            ("/", Category::General),
            ("", Category::General),
            // Python lower-cases with full Unicode case mapping: U+212A KELVIN SIGN becomes `k`.
            ("Main.\u{212a}T", Category::Code),
        ];
        for (path, category) in cases {
            assert_eq!(Category::of(path), category, "{path:?}");
        }
    }

    #[test]
    fn names_are_the_upper_case_words() {
        let all = [
            (Category::Code, "CODE"),
            (Category::Content, "CONTENT"),
            (Category::Config, "CONFIG"),
            (Category::Frontend, "FRONTEND"),
            (Category::General, "GENERAL"),
        ];
        for (category, name) in all {
            assert_eq!(category.as_str(), name);
            assert_eq!(
                serde_json::to_string(&category).expect("plain data"),
                format!("\"{name}\"")
            );
        }
    }
}
