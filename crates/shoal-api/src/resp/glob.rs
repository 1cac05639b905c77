//! Redis's glob matching (`stringmatchlen`), used by KEYS, SCAN MATCH and CONFIG GET.
//!
//! `*` any run, `?` any one byte, `[abc]`, `[a-z]`, `[^x]` classes, `\` escapes the next
//! byte. Byte-wise and case-sensitive, exactly as Redis behaves, so a pattern matches the same
//! keys here as on a real Redis.

/// Deepest `*` recursion before giving up, as Redis does against abusive patterns.
const MAX_NESTING: usize = 1000;

/// Whether `text` matches the glob `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, text, &mut skip_longer, 0)
}

/// The literal prefix every match must start with (the bytes before the first `*`, `?` or
/// `[`, escapes resolved). Used to let the node skip keys that cannot match.
pub fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::new();
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        match c {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                prefix.push(pattern[i + 1]);
                i += 2;
            }
            _ => {
                prefix.push(c);
                i += 1;
            }
        }
    }
    prefix
}

/// A port of `stringmatchlen_impl`. `p` and `s` index the pattern and string; reading past
/// the pattern's end yields 0 where the C code reads its NUL terminator.
fn match_from(pattern: &[u8], text: &[u8], skip_longer: &mut bool, nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let pat = |i: usize| pattern.get(i).copied().unwrap_or(0);
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < text.len() {
        match pattern[p] {
            b'*' => {
                while pat(p + 1) == b'*' && p + 1 < pattern.len() {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < text.len() {
                    if match_from(&pattern[p + 1..], &text[s..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                // No position in the rest of the string lets the rest of the pattern match,
                // so no earlier `*` taking a longer run can help either.
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let negate = pat(p) == b'^';
                if negate {
                    p += 1;
                }
                let c = text[s];
                let mut hit = false;
                loop {
                    if pat(p) == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        if pattern[p] == c {
                            hit = true;
                        }
                    } else if pat(p) == b']' {
                        break;
                    } else if p >= pattern.len() {
                        // Unterminated class: step back so the shared `p += 1` below ends it.
                        p -= 1;
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        let (mut start, mut end) = (pattern[p], pattern[p + 2]);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        if (start..=end).contains(&c) {
                            hit = true;
                        }
                    } else if pattern[p] == c {
                        hit = true;
                    }
                    p += 1;
                }
                if hit == negate {
                    return false;
                }
                s += 1;
            }
            b'\\' if pattern.len() - p >= 2 => {
                p += 1;
                if pattern[p] != text[s] {
                    return false;
                }
                s += 1;
            }
            literal => {
                if literal != text[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == text.len() {
            while pat(p) == b'*' && p < pattern.len() {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        matches(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn stars_and_questions() {
        // Redis quirk kept: the loop never runs on an empty string, so even `*` fails to
        // match it. Harmless here: shoal keys are never empty.
        assert!(!m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(m("user:*", "user:42"));
        assert!(!m("user:*", "users"));
        assert!(m("*:*:*", "a:b:c"));
        assert!(!m("*:*:*", "a:b"));
        assert!(m("a**b", "axxb"));
        assert!(m("abc*", "abc"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn classes() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges are swapped");
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("[\\]]", "]"));
        // Unterminated class: the class runs to the end of the pattern.
        assert!(m("a[bc", "ab"));
        assert!(!m("a[", "ab"));
    }

    #[test]
    fn escapes() {
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("\\?", "?"));
        // A trailing backslash is a literal backslash.
        assert!(m("a\\", "a\\"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let text = "a".repeat(100);
        let pattern = format!("{}b", "a*".repeat(50));
        assert!(!m(&pattern, &text));
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"a\\*b*"), b"a*b");
        assert_eq!(literal_prefix(b"*x"), b"");
        assert_eq!(literal_prefix(b"ab[cd]"), b"ab");
        assert_eq!(literal_prefix(b"plain"), b"plain");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(pattern in proptest::collection::vec(proptest::sample::select(
            b"ab*?[]^-\\".to_vec()), 0..16), text in "[ab\\[\\]*?^-]{0,16}") {
            let _ = matches(&pattern, text.as_bytes());
        }

        #[test]
        fn literal_prefix_is_implied(pattern in "[ab*?\\\\]{0,8}", text in "[ab*?\\\\]{0,8}") {
            if matches(pattern.as_bytes(), text.as_bytes()) {
                proptest::prop_assert!(text.as_bytes().starts_with(&literal_prefix(pattern.as_bytes())));
            }
        }
    }
}
