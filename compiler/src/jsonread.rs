//! Reading JSON input (probe files from `vmc probe --json`) without silent overwrites.
//!
//! `serde_json` keeps the last of two equal keys in an object, so a probe file with two
//! `kernel` keys would describe a host other than the one its first key says. This scan
//! finds every repeated key, at every level, with the places of both.

use std::collections::HashMap;

use miette::SourceSpan;

use crate::diagnostic::{Problem, SourceFile};
use crate::kdlread::{duplicate_problem, Capped};

enum Frame {
    Object {
        path: String,
        keys: HashMap<String, SourceSpan>,
        expect_key: bool,
        last_key: String,
    },
    Array {
        path: String,
        index: usize,
    },
}

/// Every key written twice in one JSON object of `source`, at any depth, as problems
/// naming the key, the object and both positions (the first
/// [`MAX_PROBLEMS`](crate::kdlread::MAX_PROBLEMS), then a count).
///
/// Meant for text `serde_json` has already accepted (so the syntax is known good); on
/// other text it still ends, without panicking, but may miss or misplace a repeat.
pub fn duplicate_keys(source: &SourceFile) -> Vec<Problem> {
    let text = source.text();
    let bytes = text.as_bytes();
    let mut problems = Capped::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            open @ (b'{' | b'[') => {
                let path = match stack.last() {
                    None => String::new(),
                    Some(Frame::Object { path, last_key, .. }) if path.is_empty() => last_key.clone(),
                    Some(Frame::Object { path, last_key, .. }) => format!("{path}.{last_key}"),
                    Some(Frame::Array { path, index }) => format!("{path}[{index}]"),
                };
                stack.push(if open == b'{' {
                    Frame::Object {
                        path,
                        keys: HashMap::new(),
                        expect_key: true,
                        last_key: String::new(),
                    }
                } else {
                    Frame::Array { path, index: 0 }
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                    Some(Frame::Array { index, .. }) => *index += 1,
                    None => {}
                }
                i += 1;
            }
            b':' => {
                if let Some(Frame::Object { expect_key, .. }) = stack.last_mut() {
                    *expect_key = false;
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i);
                if let Some(Frame::Object {
                    path,
                    keys,
                    expect_key: true,
                    last_key,
                }) = stack.last_mut()
                {
                    let raw = &text[i..end];
                    // Decoded, so that `"a"` and `"\u0061"` are the same key.
                    let key: String = serde_json::from_str(raw).unwrap_or_else(|_| raw.trim_matches('"').to_string());
                    let span = SourceSpan::from((i, end - i));
                    match keys.get(&key) {
                        Some(first) => problems.push(|| {
                            let within = if path.is_empty() {
                                "the top-level object".to_string()
                            } else {
                                format!("the object `{path}`")
                            };
                            duplicate_problem(source, &format!("key `{}`", shorten(&key)), &within, *first, span)
                        }),
                        None => {
                            keys.insert(key.clone(), span);
                        }
                    }
                    *last_key = shorten(&key);
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    problems.finish()
}

/// The offset just past the string that starts (with `"`) at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// A key as messages show it: control characters escaped, at most 64 characters.
fn shorten(key: &str) -> String {
    let escaped: String = key.escape_debug().collect();
    if escaped.chars().count() > 64 {
        format!("{}…", escaped.chars().take(60).collect::<String>())
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdlread::DUPLICATE;

    fn dups(text: &str) -> Vec<Problem> {
        assert!(
            serde_json::from_str::<serde_json::Value>(text).is_ok(),
            "valid JSON: {text}"
        );
        duplicate_keys(&SourceFile::new("p.json", text))
    }

    #[test]
    fn a_repeated_top_level_key_names_the_key_and_both_places() {
        let p = dups("{\n  \"kernel\": \"6.9\",\n  \"name\": \"a\",\n  \"kernel\": \"5.15\"\n}");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].code, DUPLICATE);
        assert_eq!(
            p[0].message,
            "duplicate key `kernel` in the top-level object: first at line 2, column 3, again at line 4, column 3"
        );
        assert_eq!(p[0].span, Some(SourceSpan::from((38, 8))));
        assert_eq!(p[0].related, vec![(SourceSpan::from((4, 8)), "first".to_string())]);
    }

    #[test]
    fn repeats_are_found_at_every_level_and_named_by_path() {
        let p = dups(r#"{"a": {"b": 1, "b": 2}, "c": [{"d": 1}, {"e": [{"f": 1, "f": 1}]}]}"#);
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("duplicate key `b` in the object `a`:"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("duplicate key `f` in the object `c[1].e[0]`:"),
            "{messages:?}"
        );
    }

    #[test]
    fn equal_keys_in_different_objects_and_values_equal_to_keys_are_fine() {
        for text in [
            r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}"#,
            r#"{"a": "a", "b": ["a", "a"], "c": {"x": "b"}}"#,
            r#"{"a\"b": 1, "a": {"\"b": 2}, "a,b": 3, "ab": 4, "a:b": 5}"#,
            r#"[{"a": 1}, {"a": 1}]"#,
            r#"{}"#,
        ] {
            assert!(dups(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn escaped_spellings_of_one_key_are_the_same_key() {
        let p = dups(r#"{"kernel": "6.9", "k\u0065rnel": "5.15"}"#);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.starts_with("duplicate key `kernel`"), "{}", p[0].message);
    }

    #[test]
    fn three_copies_are_two_problems_both_pointing_at_the_first() {
        let p = dups(r#"{"a": 1, "a": 2, "a": 3}"#);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.related[0].0 == SourceSpan::from((1, 3))));
    }

    #[test]
    fn many_repeats_are_counted_after_the_first_fifty() {
        let text = format!("{{{}\"a\": 0}}", "\"a\": 0, ".repeat(10_000));
        let p = dups(&text);
        assert_eq!(p.len(), crate::kdlread::MAX_PROBLEMS + 1);
        assert!(
            p[50].message.starts_with("... and 9950 more problems"),
            "{}",
            p[50].message
        );
    }

    #[test]
    fn malformed_text_ends_without_panicking() {
        for text in ["{\"a", "{\"a\": \"\\", "}}]]{{", "{\"a\":1,\"a\"", "\"", "[[[[", ""] {
            let _ = duplicate_keys(&SourceFile::new("bad.json", text));
        }
    }
}
