//! What every typed action shares: its parameters, the [`TypedAction`] and [`ListAction`]
//! traits, typed views of responses, and the [`EventMask`] of `Events` and `Login`.

use crate::event::FromEvent;
use crate::generated::actions::EVENT_CLASSES;
use ami_proto::{Action, Message, Response};
use std::borrow::Cow;
use std::fmt;

/// The parameters of a typed action, in the order they were first set.
///
/// Setting a parameter again replaces its value; repeatable parameters (`Variable`) add one
/// header per call. `ActionID` is not a parameter: the client assigns it.
///
/// Values go out as given, and Asterisk reads a header's value from its first byte above a
/// space (`__astman_get_header`): `" x"` sets `x` ([`Action::field`]). Only what Asterisk
/// copies as sent keeps leading blanks: a `UserEvent`'s own headers, and a `Variable` value
/// after its `=` (the `var` methods escape a blank that starts the name).
///
/// Its `Debug` (and so that of every typed action) shows the value of a secret parameter
/// ([`ami_proto::is_secret_key`]: `Login`'s `Secret` and `Key`) as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Params {
    name: &'static str,
    fields: Vec<(Cow<'static, str>, String)>,
}

impl fmt::Debug for Params {
    /// Written out rather than derived: a `Login` printed with `{:?}` (a log line, a test
    /// failure, a panic message) must not show its secret. The same marker as the `Debug`
    /// of [`Action`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Fields<'a>(&'a [(Cow<'static, str>, String)]);
        impl fmt::Debug for Fields<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut list = f.debug_list();
                for (k, v) in self.0 {
                    if ami_proto::is_secret_key(k.trim()) {
                        list.entry(&(k, "<redacted>"));
                    } else {
                        list.entry(&(k, v));
                    }
                }
                list.finish()
            }
        }
        f.debug_struct("Params")
            .field("name", &self.name)
            .field("fields", &Fields(&self.fields))
            .finish()
    }
}

impl Params {
    pub(crate) fn new(name: &'static str) -> Params {
        Params {
            name,
            fields: Vec::new(),
        }
    }

    /// Sets `key`, replacing an earlier value.
    pub(crate) fn set(&mut self, key: Cow<'static, str>, value: String) {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    /// Adds one more `key` header (repeatable parameters).
    pub(crate) fn push(&mut self, key: &'static str, value: String) {
        self.fields.push((Cow::Borrowed(key), value));
    }

    /// Adds a header whose name the caller chose (`UserEvent`'s own headers). Checked, as
    /// every name and value, when the client encodes the action.
    pub(crate) fn push_header(&mut self, key: String, value: String) {
        self.fields.push((Cow::Owned(key), value));
    }

    /// The action name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The first value set for `key` (exact name).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// The [`Action`] to send. Values are checked (CR, LF, NUL, line length) when the
    /// client encodes it, as for any action.
    pub fn to_action(&self) -> Action {
        let mut action = Action::new(self.name);
        for (k, v) in &self.fields {
            action.push(k.as_ref(), v.as_str());
        }
        action
    }
}

/// A typed action: a builder that becomes an [`Action`], with a typed view of its response.
pub trait TypedAction: Into<Action> {
    /// The `Action:` name.
    const NAME: &'static str;
    /// A typed view of the `Response:` message ([`Ack`] when the response has no fields
    /// beyond `Message`).
    type Response<'a>: ResponseView<'a>;

    /// The typed view of `response`.
    fn response(response: &Response) -> Self::Response<'_> {
        Self::Response::from_response(response.message())
    }
}

/// An action answered by an event list: the response, item events, then a completion event.
pub trait ListAction: TypedAction {
    /// The item event ([`crate::Event`] when the list mixes several kinds).
    type Item<'a>: FromEvent<'a>;
    /// The completion event (`...Complete`).
    type Complete<'a>: FromEvent<'a>;

    /// The typed items of `response`; an item of another kind comes back as `Err` with its
    /// message, never dropped.
    fn items(response: &Response) -> impl Iterator<Item = Result<Self::Item<'_>, &Message>> {
        response
            .items()
            .iter()
            .map(|m| Self::Item::from_event(m).ok_or(m))
    }

    /// The typed completion event, if the list completed (an `Err` holds an unexpected one).
    fn complete(response: &Response) -> Option<Result<Self::Complete<'_>, &Message>> {
        response
            .complete()
            .map(|m| Self::Complete::from_event(m).ok_or(m))
    }
}

/// A typed view of a response message.
pub trait ResponseView<'a>: Sized {
    /// The view of `m` (any response; absent fields read as `None`).
    fn from_response(m: &'a Message) -> Self;
}

/// The response of an action with no typed fields: `Response` and `Message` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a>(&'a Message);

impl<'a> Ack<'a> {
    /// The response message, every header as sent.
    pub fn message(&self) -> &'a Message {
        self.0
    }

    /// The `Message:` text.
    pub fn text(&self) -> Option<&'a str> {
        self.0.get_str("Message")
    }
}

impl<'a> ResponseView<'a> for Ack<'a> {
    fn from_response(m: &'a Message) -> Self {
        Ack(m)
    }
}

/// Which events a session is sent: the `EventMask` of the `Events` action and the `Events`
/// of `Login`.
///
/// Asterisk reads `on` (every class the user may read), `off`, or a comma-separated list of
/// class names (`call,agent`). A `bool` converts to `on` / `off`; a class list is built with
/// [`classes`](Self::classes), which refuses a name Asterisk does not know, since Asterisk
/// would ignore it without a word (and `calls` would then ask for nothing).
///
/// ```
/// use ami_types::actions::{EventMask, Events, Login};
///
/// let everything = Events::new(true);
/// let calls_and_agents = Events::new(EventMask::classes(["call", "agent"])?);
/// let quiet = Login::new("admin").events(EventMask::OFF);
/// assert_eq!(calls_and_agents.params().get("EventMask"), Some("call,agent"));
/// # Ok::<(), ami_types::actions::InvalidEventMask>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventMask(Cow<'static, str>);

impl EventMask {
    /// Every event class the user may read (`on`).
    pub const ON: EventMask = EventMask(Cow::Borrowed("on"));
    /// No events (`off`).
    pub const OFF: EventMask = EventMask(Cow::Borrowed("off"));

    /// The events of these classes (`call`, `agent`, ...; `all` and `none` too), as
    /// Asterisk spells them: lowercase, matched exactly.
    pub fn classes<I>(classes: I) -> Result<EventMask, InvalidEventMask>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut mask = String::new();
        for class in classes {
            let class = class.as_ref();
            if !is_class(class) {
                return Err(InvalidEventMask::UnknownClass(class.to_string()));
            }
            if !mask.is_empty() {
                mask.push(',');
            }
            mask.push_str(class);
        }
        if mask.is_empty() {
            // An empty header is no mask at all to Asterisk (`strings_to_mask` returns -1).
            return Err(InvalidEventMask::Empty);
        }
        Ok(EventMask(Cow::Owned(mask)))
    }

    /// The mask as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A class name of `perms[]` in `main/manager.c` (matched case-sensitively by Asterisk).
fn is_class(name: &str) -> bool {
    EVENT_CLASSES.contains(&name) || name == "all" || name == "none"
}

impl From<bool> for EventMask {
    fn from(on: bool) -> Self {
        if on {
            EventMask::ON
        } else {
            EventMask::OFF
        }
    }
}

impl fmt::Display for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why [`EventMask::classes`] refused a class list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidEventMask {
    /// No class at all.
    Empty,
    /// A name that is no event class (Asterisk would ignore it; names are lowercase).
    UnknownClass(String),
}

impl fmt::Display for InvalidEventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidEventMask::Empty => f.write_str("an event mask needs at least one class"),
            InvalidEventMask::UnknownClass(c) => write!(
                f,
                "`{}` is no event class (Asterisk would ignore it)",
                c.escape_debug()
            ),
        }
    }
}

impl std::error::Error for InvalidEventMask {}
