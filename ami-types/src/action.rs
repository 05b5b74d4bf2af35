//! What every typed action shares: its parameters, the [`TypedAction`] and [`ListAction`]
//! traits, and typed views of responses.

use crate::event::FromEvent;
use ami_proto::{Action, Message, Response};
use std::borrow::Cow;

/// The parameters of a typed action, in the order they were first set.
///
/// Setting a parameter again replaces its value; repeatable parameters (`Variable`) add one
/// header per call. `ActionID` is not a parameter: the client assigns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    name: &'static str,
    fields: Vec<(Cow<'static, str>, String)>,
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
