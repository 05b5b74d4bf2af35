//! Channel variables in a `Variable` header, escaped so that Asterisk reads back exactly the
//! name and value the caller gave.
//!
//! Originate, MessageSend and PJSIPNotify hand every `Variable` header to
//! `astman_get_variables`, which splits it into `name=value` pairs with the dialplan's
//! argument splitter (`__ast_app_separate_args`): an unescaped `,` ends the pair (outside
//! `()`, `[]` and `"…"`), `"` toggles quoting and vanishes, `\` vanishes and keeps the next
//! byte literal, and the pair is cut at its first `=`. A value such as `a,b` therefore sets
//! the variable to `a` (and tries to set one named `b`), and a JSON value loses its quotes:
//! silently, since Asterisk answers Success either way. Escaping `\`, `"` and `,` with a
//! backslash makes every value arrive whole, whatever brackets it holds.

use super::action::Action;
use thiserror::Error;

/// Why a name cannot be a channel variable's in a `Variable` header.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidVariable {
    /// Empty: Asterisk skips a pair without a name.
    #[error("channel variable name is empty")]
    EmptyName,
    /// Holds `=`: Asterisk cuts the pair at its first `=`, so the variable set would be a
    /// different one, named by the text before it.
    #[error("channel variable name {name:?} contains '=', where Asterisk would cut it")]
    EqualsInName {
        /// The refused name (names are never secret).
        name: String,
    },
}

/// `name=value` as one pair of a `Variable` header: `\`, `"` and `,` (and a leading blank,
/// which Asterisk would skip) escaped with a backslash, so that Asterisk sets exactly
/// `name` to exactly `value`. Dialplan functions work as names (`PJSIP_HEADER(add,X-Lead)`).
///
/// CR, LF and NUL are left for [`Action::encode`] to refuse, as in any other field.
///
/// ```
/// assert_eq!(
///     ami_proto::variable_pair("NOTE", r#"a, "b" \c"#).unwrap(),
///     r#"NOTE=a\, \"b\" \\c"#
/// );
/// ```
pub fn variable_pair(name: &str, value: &str) -> Result<String, InvalidVariable> {
    if name.is_empty() {
        return Err(InvalidVariable::EmptyName);
    }
    if name.contains('=') {
        return Err(InvalidVariable::EqualsInName {
            name: name.escape_debug().to_string(),
        });
    }
    let mut out = String::with_capacity(name.len() + value.len() + 4);
    if name.starts_with(|c: char| c <= ' ') {
        // Asterisk skips blanks at the start of a header's value; an escaped one stays.
        out.push('\\');
    }
    escape_into(&mut out, name);
    out.push('=');
    escape_into(&mut out, value);
    Ok(out)
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(c, '\\' | '"' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
}

impl Action {
    /// Adds one `Variable` header that sets channel variable `name` to `value`, escaped
    /// ([`variable_pair`]) so that commas, quotes and backslashes in either arrive intact.
    /// For Originate, MessageSend and PJSIPNotify; `.field("Variable", "A=1")` sends the
    /// text as it is.
    ///
    /// ```
    /// use ami_proto::Action;
    ///
    /// let action = Action::new("Originate")
    ///     .field("Channel", "PJSIP/100")
    ///     .variable("LEAD", r#"{"id":42,"tags":["a","b"]}"#)?;
    /// assert_eq!(action.get("Variable"), Some(r#"LEAD={\"id\":42\,\"tags\":[\"a\"\,\"b\"]}"#));
    /// # Ok::<(), ami_proto::InvalidVariable>(())
    /// ```
    pub fn variable(mut self, name: &str, value: &str) -> Result<Action, InvalidVariable> {
        self.push("Variable", variable_pair(name, value)?);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What Asterisk does with one `Variable` header's value: `astman_get_header` and
    /// `man_do_variable_value` skip leading blanks, `__ast_app_separate_args` (with
    /// `remove_chars`) splits on `,` and drops quotes and backslashes, and each argument is
    /// cut at its first `=`; pairs with no `=` or an empty name are skipped.
    fn asterisk_reads(header_value: &str) -> Vec<(String, String)> {
        let text = header_value.trim_start_matches(|c: char| c <= ' ');
        let mut args = vec![String::new()];
        let (mut paren, mut bracket, mut quote) = (0u32, 0u32, false);
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            let arg = args.last_mut().expect("never empty");
            match c {
                '(' => {
                    paren += 1;
                    arg.push(c);
                }
                ')' => {
                    paren = paren.saturating_sub(1);
                    arg.push(c);
                }
                '[' => {
                    bracket += 1;
                    arg.push(c);
                }
                ']' => {
                    bracket = bracket.saturating_sub(1);
                    arg.push(c);
                }
                '"' => quote = !quote,
                '\\' => arg.extend(chars.next()),
                ',' if paren == 0 && bracket == 0 && !quote => args.push(String::new()),
                _ => arg.push(c),
            }
        }
        args.into_iter()
            .filter_map(|a| {
                let (k, v) = a.split_once('=')?;
                (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    #[test]
    fn unescaped_commas_and_quotes_are_what_asterisk_splits_and_drops() {
        // The defect this module exists for, as Asterisk reads the raw text.
        assert_eq!(
            asterisk_reads(r#"NOTE=a,b "c" \d"#),
            [("NOTE".into(), "a".into())]
        );
        assert_eq!(
            asterisk_reads(r#"JSON={"a":1,"b":[2,3]}"#),
            [("JSON".into(), "{a:1".into())]
        );
    }

    #[test]
    fn values_with_commas_quotes_backslashes_and_brackets_arrive_whole() {
        for value in [
            r#"a,b "c" \d"#,
            r#"{"a":1,"b":[2,3]}"#,
            "unbalanced ( , [ , ] , ) ,",
            r"trailing backslash \",
            "\"",
            "",
            "  leading and trailing blanks  ",
            "x=y=z",
        ] {
            let pair = variable_pair("V", value).unwrap();
            assert_eq!(
                asterisk_reads(&pair),
                [("V".to_string(), value.to_string())],
                "{value:?} sent as {pair:?}"
            );
        }
    }

    #[test]
    fn a_dialplan_function_name_with_a_comma_is_kept_whole() {
        let pair = variable_pair("PJSIP_HEADER(add,X-Lead)", "42").unwrap();
        assert_eq!(
            asterisk_reads(&pair),
            [("PJSIP_HEADER(add,X-Lead)".into(), "42".into())]
        );
    }

    #[test]
    fn a_name_starting_with_a_blank_keeps_it() {
        let pair = variable_pair(" X", "1").unwrap();
        assert_eq!(asterisk_reads(&pair), [(" X".into(), "1".into())]);
    }

    #[test]
    fn names_asterisk_cannot_carry_are_refused() {
        assert_eq!(variable_pair("", "1"), Err(InvalidVariable::EmptyName));
        assert_eq!(
            variable_pair("A=B", "1"),
            Err(InvalidVariable::EqualsInName { name: "A=B".into() })
        );
        assert!(Action::new("Originate").variable("", "x").is_err());
    }

    #[test]
    fn an_escaped_pair_still_refuses_line_breaks_at_encode() {
        let action = Action::new("Originate")
            .variable("X", "a\r\nAction: Command")
            .unwrap();
        assert!(action.encode(None, &mut Vec::new()).is_err());
    }

    proptest! {
        /// Whatever the name (no `=`, not empty) and value, Asterisk reads back exactly
        /// one pair: that name, that value.
        #[test]
        fn asterisk_reads_back_exactly_the_pair_given(
            name in "[^=\r\n\x00]{1,24}",
            value in "[^\r\n\x00]{0,64}",
        ) {
            let pair = variable_pair(&name, &value).unwrap();
            prop_assert_eq!(asterisk_reads(&pair), vec![(name, value)]);
        }
    }
}
