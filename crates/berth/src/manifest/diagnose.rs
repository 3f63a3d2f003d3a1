//! Errors people can act on: each one names the file, line and column and the key at
//! fault, and an unknown word comes with the nearest known one.
//!
//! The rules for app names, image names and tags are here as well.

use std::ops::Range;
use std::path::Path;

use super::{ManifestError, Place};

/// The manifest's text and the path that names it, so that a byte span of the text can
/// become a `file:line:col` error.
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub path: &'a Path,
}

impl Source<'_> {
    /// An error at `span`; `key` is the dotted key at fault, or empty.
    pub fn error(&self, span: Range<usize>, key: &str, message: String) -> ManifestError {
        let (line, column) = position(self.text, span.start);
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            key: if key.is_empty() {
                String::new()
            } else {
                format!("{key}: ")
            },
            message,
        }
    }

    /// The place of `span`, to name in errors found after parsing.
    pub fn place(&self, span: Range<usize>, key: &str) -> Place {
        let (line, column) = position(self.text, span.start);
        Place {
            path: self.path.to_path_buf(),
            line,
            column,
            key: key.to_string(),
        }
    }

    /// A TOML syntax error.
    pub fn syntax_error(&self, e: &toml::de::Error) -> ManifestError {
        let span = e.span().unwrap_or(0..0);
        let message = match e.message() {
            // The parser points at the key but does not name it.
            "duplicate key" => format!(
                "duplicate key `{}`; it is set above already, so remove one of the two",
                self.text.get(span.clone()).unwrap_or("").trim()
            ),
            other => other.to_string(),
        };
        self.error(span, "", message)
    }

    /// A value or key serde rejected, at the key it was reading.
    pub fn value_error(&self, e: serde_path_to_error::Error<toml::de::Error>) -> ManifestError {
        // serde's internal names (for `Spanned`) are not keys people wrote.
        let key = e
            .path()
            .to_string()
            .split('.')
            .filter(|part| !part.starts_with("$__serde"))
            .collect::<Vec<_>>()
            .join(".");
        let key = if key == "." { String::new() } else { key };
        let inner = e.into_inner();
        self.error(inner.span().unwrap_or(0..0), &key, explain(inner.message()))
    }
}

/// 1-based line and column of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Rewrites serde's messages for people: unknown keys get the nearest known key.
fn explain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return plain_types(message);
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let accepted: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!(
        "unknown key `{field}`{}; accepted keys: {}",
        suggest(field, &accepted),
        accepted.join(", ")
    )
}

/// serde names Rust's types (`expected usize`); people wrote TOML.
fn plain_types(message: &str) -> String {
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let expected = match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number, 0 or more",
        "i64" | "i32" | "isize" => "a whole number",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        other => other,
    };
    let found = found
        .trim_start_matches("invalid type: ")
        .trim_start_matches("invalid value: ");
    let found = [
        ("integer ", "the number "),
        ("floating point ", "the number "),
        ("string ", "the string "),
        ("boolean ", ""),
        ("map", "a table"),
        ("sequence", "an array"),
    ]
    .iter()
    .find_map(|(serde, toml)| {
        found
            .strip_prefix(serde)
            .map(|rest| format!("{toml}{rest}"))
    })
    .unwrap_or_else(|| found.to_string());
    format!("{found} is not accepted here; expected {expected}")
}

/// ` (did you mean `x`?)` for the nearest candidate, if one is near enough.
pub(super) fn suggest(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_nearest_key_only_when_near() {
        assert_eq!(
            suggest("sleep_afte", &["sleep_after", "labels"]),
            " (did you mean `sleep_after`?)"
        );
        assert_eq!(suggest("zzz", &["sleep_after", "labels"]), "");
    }
}
