//! The typed view of an event stream: [`TypedItem::typed`] on the [`StreamItem`] every
//! adapter hands out (`ami-tokio`, `ami-async-std`, `ami-mio`, or `Client::poll_event`).
//! A view over the same item, not a second queue: nothing is copied or held back.

use crate::event::FromEvent;
use crate::Event;
use ami_proto::StreamItem;

/// Typed access to a stream item.
///
/// ```
/// use ami_proto::StreamItem;
/// use ami_types::{Event, TypedItem};
///
/// fn on_item(item: &StreamItem) {
///     match item.typed() {
///         Some(Event::Hangup(h)) => println!("{:?} hung up: {:?}", h.channel().name(), h.cause()),
///         Some(other) => println!("{:?}", other.name()),
///         None => println!("not an event: {item:?}"),
///     }
/// }
/// # let _ = on_item;
/// ```
pub trait TypedItem {
    /// The typed event; `None` for an item that is not an event (a gap, a mark, a session
    /// boundary).
    fn typed(&self) -> Option<Event<'_>>;

    /// The item as one event type (`item.typed_as::<events::Hangup>()`); `None` for another
    /// event or an item that is not an event.
    fn typed_as<'a, T: FromEvent<'a>>(&'a self) -> Option<T>;
}

impl TypedItem for StreamItem {
    fn typed(&self) -> Option<Event<'_>> {
        match self {
            StreamItem::Event(m) => Some(Event::from_message(m)),
            _ => None,
        }
    }

    fn typed_as<'a, T: FromEvent<'a>>(&'a self) -> Option<T> {
        match self {
            StreamItem::Event(m) => T::from_event(m),
            _ => None,
        }
    }
}
