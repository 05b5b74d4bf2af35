//! NATS subject patterns: `.`-separated tokens where `*` matches exactly one token and `>`
//! (last token only) matches one or more. Used to check an existing stream's subjects
//! against what the bridge publishes and the action subjects it answers.

/// Whether every subject `inner` matches is matched by `outer` too.
///
/// For the stream check, a pattern covered by none of a stream's subjects alone is not
/// covered by their union either: a subject of `inner` with tokens that no pattern names
/// literally (and, under a `>`, longer than any pattern) is matched only by a pattern that
/// covers `inner` on its own.
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            // `>` takes one or more tokens: whatever `inner` has left, if anything.
            (Some(">"), Some(_)) => return true,
            (None, None) => return true,
            // `inner` matches subjects of a length `outer` does not.
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
        }
    }
}

/// Whether some subject is matched by both `a` and `b`.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) | (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) => {
                if x != y {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_covers_exactly_the_patterns_whose_subjects_it_all_matches() {
        for (outer, inner) in [
            ("ami.>", "ami.*.event.>"),
            ("ami.>", "ami.pbx1.gap"),
            (">", "ami.*.session"),
            ("ami.*.event.>", "ami.*.event.>"),
            ("ami.*.event.>", "ami.pbx1.event.Hangup"),
            ("ami.*.event.>", "ami.pbx1.event.*.x"),
            ("ami.*.gap", "ami.pbx1.gap"),
            ("ami.*.gap", "ami.*.gap"),
            ("ami.*.*", "ami.*.gap"),
            ("ami.pbx1.gap", "ami.pbx1.gap"),
        ] {
            assert!(covers(outer, inner), "{outer} should cover {inner}");
        }
        for (outer, inner) in [
            ("ami.pbx1.>", "ami.*.event.>"),
            ("ami.*.event.*", "ami.*.event.>"),
            ("ami.*.event.>", "ami.*.event"),
            ("ami.*.gap", "ami.*.gap.x"),
            ("ami.*.gap.x", "ami.*.gap"),
            ("ami.pbx1.gap", "ami.*.gap"),
            ("ami.*.gap", "ami.*.session"),
            ("ami.*", "ami.*.gap"),
            ("ami.>", "ami"),
            ("ami.>", ">"),
            ("*.>", ">"),
        ] {
            assert!(!covers(outer, inner), "{outer} should not cover {inner}");
        }
    }

    #[test]
    fn two_patterns_overlap_when_one_subject_matches_both() {
        for (a, b) in [
            ("ami.>", "ami.*.action"),
            ("ami.>", "ami.bridge.*.action"),
            (">", "ami.any.action"),
            ("ami.*.*", "ami.*.action"),
            ("ami.pbx1.*", "ami.*.action"),
            ("*.*.action", "ami.*.action"),
            ("ami.*.action.>", "ami.*.action.x"),
            ("ami.bridge.>", "ami.bridge.*.action"),
            ("ami.*.event.>", "ami.bridge.event.>"),
            ("ami.*.action", "ami.any.action"),
            // `ami.bridge.event.action`: why the check uses this process's own subject,
            // never the pattern of every bridge's.
            ("ami.*.event.>", "ami.bridge.*.action"),
        ] {
            assert!(overlap(a, b), "{a} and {b} should overlap");
            assert!(overlap(b, a), "{b} and {a} should overlap");
        }
        for (a, b) in [
            ("ami.*.event.>", "ami.*.action"),
            ("ami.*.gap", "ami.*.action"),
            ("ami.*.session", "ami.bridge.*.action"),
            ("ami.*.event.>", "ami.bridge.b1_0123456789abcdef.action"),
            ("ami.*.action.>", "ami.*.action"),
            ("ami.>", "ami"),
            ("ami.*", "ami.*.action"),
            ("other.>", "ami.*.action"),
        ] {
            assert!(!overlap(a, b), "{a} and {b} should not overlap");
            assert!(!overlap(b, a), "{b} and {a} should not overlap");
        }
    }
}
