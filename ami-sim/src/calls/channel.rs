//! A simulated channel and the channel snapshot block events print.

use crate::events::escape_c;
use crate::out::PushField;
use std::time::Instant;

/// Channel states Asterisk reports (`ChannelState`/`ChannelStateDesc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChanState {
    Down,
    Ring,
    Up,
}

impl ChanState {
    pub(crate) fn code(self) -> u8 {
        match self {
            ChanState::Down => 0,
            ChanState::Ring => 4,
            ChanState::Up => 6,
        }
    }

    pub(crate) fn desc(self) -> &'static str {
        match self {
            ChanState::Down => "Down",
            ChanState::Ring => "Ring",
            ChanState::Up => "Up",
        }
    }
}

/// One live channel as the simulator holds it, from
/// [`SimServer::channel_table`](crate::SimServer::channel_table).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelRow {
    /// `Uniqueid`.
    pub uniqueid: String,
    /// `Linkedid`.
    pub linkedid: String,
    /// `Channel`.
    pub name: String,
    /// `ChannelState` code.
    pub state: u8,
    /// `CallerIDNum` as events print it (`<unknown>` when unset).
    pub caller_id_num: String,
    /// `Context`.
    pub context: String,
    /// `Exten`.
    pub exten: String,
    /// Channel variables, in the order set.
    pub variables: Vec<(String, String)>,
}

/// One channel of a call.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub(crate) name: String,
    pub(crate) uniqueid: String,
    pub(crate) linkedid: String,
    pub(crate) state: ChanState,
    pub(crate) cid_num: Option<String>,
    pub(crate) cid_name: Option<Vec<u8>>,
    pub(crate) conn_num: Option<String>,
    pub(crate) conn_name: Option<Vec<u8>>,
    pub(crate) account: String,
    pub(crate) context: String,
    pub(crate) exten: String,
    pub(crate) priority: u32,
    pub(crate) app: String,
    pub(crate) app_data: String,
    pub(crate) vars: Vec<(String, String)>,
    pub(crate) created: Instant,
    pub(crate) answered: Option<Instant>,
}

const UNKNOWN: &[u8] = b"<unknown>";

/// Most variables one channel keeps: a client setting ever new ones (AMI `Setvar` names
/// whatever it likes) must not grow the simulator without bound. Asterisk has no such
/// limit; no dialplan or dialer comes near it.
pub(crate) const MAX_VARS: usize = 1024;
/// Most bytes of names and values one channel keeps: more than the variables of the
/// largest Originate the simulator reads (128 lines of 1,024 bytes), so those always fit.
pub(crate) const MAX_VARS_BYTES: usize = 128 << 10;

impl Channel {
    /// Sets (or replaces) a channel variable; false (nothing changed) when that would take
    /// the channel past [`MAX_VARS`] variables or [`MAX_VARS_BYTES`] of names and values.
    pub(crate) fn set_var(&mut self, name: &str, value: &str) -> bool {
        let bytes: usize = self.vars.iter().map(|(n, v)| n.len() + v.len()).sum();
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => {
                if bytes - slot.1.len() + value.len() > MAX_VARS_BYTES {
                    return false;
                }
                slot.1 = value.to_string();
            }
            None => {
                if self.vars.len() >= MAX_VARS || bytes + name.len() + value.len() > MAX_VARS_BYTES
                {
                    return false;
                }
                self.vars.push((name.to_string(), value.to_string()));
            }
        }
        true
    }

    /// A channel variable's value.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Writes the channel snapshot block (`ast_manager_build_channel_state_string_prefix`)
    /// into an event, or into a list item.
    pub(crate) fn block(&self, ev: &mut impl PushField, prefix: &str) {
        let k = |s: &str| format!("{prefix}{s}");
        ev.push(&k("Channel"), &self.name);
        ev.push(&k("ChannelState"), self.state.code().to_string());
        ev.push(&k("ChannelStateDesc"), self.state.desc());
        ev.push(&k("CallerIDNum"), self.cid_num_text());
        ev.push(&k("CallerIDName"), self.cid_name_text());
        ev.push(
            &k("ConnectedLineNum"),
            self.conn_num.as_deref().map_or(UNKNOWN, str::as_bytes),
        );
        ev.push(
            &k("ConnectedLineName"),
            self.conn_name.as_deref().map_or(UNKNOWN.to_vec(), escape_c),
        );
        ev.push(&k("Language"), "en");
        ev.push(&k("AccountCode"), &self.account);
        ev.push(&k("Context"), &self.context);
        ev.push(&k("Exten"), &self.exten);
        ev.push(&k("Priority"), self.priority.to_string());
        ev.push(&k("Uniqueid"), &self.uniqueid);
        ev.push(&k("Linkedid"), &self.linkedid);
    }

    pub(crate) fn cid_num_text(&self) -> &[u8] {
        self.cid_num.as_deref().map_or(UNKNOWN, str::as_bytes)
    }

    pub(crate) fn cid_name_text(&self) -> Vec<u8> {
        self.cid_name.as_deref().map_or(UNKNOWN.to_vec(), escape_c)
    }
}

/// Parses an Originate's `CallerID` header like `ast_callerid_parse`: `"Name" <num>`,
/// `Name <num>`, a bare number, or a bare name; then, as manager.c's `action_originate`
/// does, shrinks the number with [`shrink_phone_number`] (an empty one is none).
pub(crate) fn parse_callerid(text: &str) -> (Option<Vec<u8>>, Option<String>) {
    let (name, num) = parse_callerid_raw(text);
    let num = num
        .map(|n| shrink_phone_number(&n))
        .filter(|n| !n.is_empty());
    (name, num)
}

/// `ast_shrink_phone_number`: drops `(`, `)`, spaces, a `-` outside `[...]` and a `.`
/// that is not the last character.
pub(crate) fn shrink_phone_number(num: &str) -> String {
    let mut out = String::with_capacity(num.len());
    let mut bracketed = 0i32;
    let mut chars = num.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                bracketed += 1;
                out.push(c);
            }
            ']' => {
                bracketed -= 1;
                out.push(c);
            }
            '-' => {
                if bracketed != 0 {
                    out.push(c);
                }
            }
            '.' => {
                if chars.peek().is_none() {
                    out.push(c);
                }
            }
            '(' | ' ' | ')' => {}
            _ => out.push(c),
        }
    }
    out
}

/// The name and number of a `CallerID` value, the number as written.
fn parse_callerid_raw(text: &str) -> (Option<Vec<u8>>, Option<String>) {
    let text = text.trim();
    if text.is_empty() {
        return (None, None);
    }
    if let (Some(open), Some(close)) = (text.rfind('<'), text.rfind('>')) {
        if open < close {
            let num = text[open + 1..close].trim().to_string();
            let name = text[..open].trim().trim_matches('"').trim().to_string();
            return (
                (!name.is_empty()).then(|| name.into_bytes()),
                (!num.is_empty()).then_some(num),
            );
        }
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || "+-*#() .".contains(c));
    if looks_numeric {
        (None, Some(text.to_string()))
    } else {
        (Some(text.trim_matches('"').as_bytes().to_vec()), None)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_callerid;

    #[test]
    fn callerid_forms() {
        assert_eq!(
            parse_callerid("AMI Test <5551000>"),
            (Some(b"AMI Test".to_vec()), Some("5551000".to_string()))
        );
        assert_eq!(
            parse_callerid("\"Q\" <1>"),
            (Some(b"Q".to_vec()), Some("1".to_string()))
        );
        assert_eq!(
            parse_callerid("5551000"),
            (None, Some("5551000".to_string()))
        );
        assert_eq!(parse_callerid("Bob"), (Some(b"Bob".to_vec()), None));
        assert_eq!(
            parse_callerid("Sales <(555) 100-2000>"),
            (Some(b"Sales".to_vec()), Some("5551002000".to_string()))
        );
        assert_eq!(
            parse_callerid("Nobody <( )>"),
            (Some(b"Nobody".to_vec()), None)
        );
    }

    #[test]
    fn numbers_shrink_like_ast_shrink_phone_number() {
        use super::shrink_phone_number as shrink;
        assert_eq!(shrink("+1 (555) 100-2000"), "+15551002000");
        assert_eq!(shrink("[1-5]-9"), "[1-5]9");
        assert_eq!(shrink("1.2.3."), "123.");
    }
}
