//! # ami-types: typed AMI events, actions and responses for Asterisk 22
//!
//! Every event and action of Asterisk 22.10.1, generated from the AMI catalog
//! (`../shared/catalog`) by `ami-codegen`: `match` on an [`Event`] instead of comparing
//! strings, read `h.cause()` as an integer, and build an `Originate` whose required
//! parameters the compiler asks for.
//!
//! ```
//! use ami_proto::{Action, Decoder, DecoderLimits, Frame};
//! use ami_types::actions::{Originate, TypedAction};
//! use ami_types::enums::ChannelStateDesc;
//! use ami_types::Event;
//!
//! // An event as the decoder hands it out.
//! let mut decoder = Decoder::without_banner(DecoderLimits::default());
//! decoder.feed(b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/1001-00000007\r\n\
//!     ChannelState: 6\r\nChannelStateDesc: Up\r\nUniqueid: 1795423135.39\r\n\
//!     Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n");
//! let Some(Ok(Frame::Message(message))) = decoder.decode() else { unreachable!() };
//!
//! match Event::from_message(&message) {
//!     Event::Hangup(h) => {
//!         assert_eq!(h.cause(), Some(16));
//!         assert_eq!(h.cause_txt(), Some("Normal Clearing"));
//!         assert_eq!(h.channel().name(), Some("PJSIP/1001-00000007"));
//!         assert_eq!(h.channel().state_desc(), Some(ChannelStateDesc::Up));
//!         assert!(h.issues().is_empty()); // every field parsed as its declared type
//!         assert_eq!(h.message(), &message); // nothing lost: the exact message
//!     }
//!     other => panic!("not a hangup: {other:?}"),
//! }
//!
//! // An action: required parameters are arguments, optional ones are methods.
//! let originate = Originate::new("PJSIP/1001")
//!     .context("from-internal")
//!     .exten("5551234")
//!     .priority(1)
//!     .timeout(30_000)
//!     .async_(true)
//!     .var("CAMPAIGN", "spring")?
//!     // Escaped: Asterisk would otherwise cut the value at its comma.
//!     .var("LEAD", "42,priority")?;
//! let action: Action = originate.into();
//! assert_eq!(action.name(), Originate::NAME);
//! assert_eq!(action.get("Async"), Some("true"));
//! let vars: Vec<_> = action.fields().filter(|(k, _)| *k == "Variable").collect();
//! assert_eq!(vars, [("Variable", "CAMPAIGN=spring"), ("Variable", r"LEAD=42\,priority")]);
//! # Ok::<(), ami_proto::InvalidVariable>(())
//! ```
//!
//! How an async Originate ended, from its outcome, is one `match` on
//! [`originate::OriginateEnd`]: answered, failed with its [`originate::DialReason`] (busy,
//! no answer...), refused by Asterisk, placed with its end unknown, in doubt, or never sent.
//!
//! ## Events
//!
//! [`Event::from_message`] looks the event name up (ignoring case, as Asterisk's own
//! clients must) and wraps the message: a view, no copy. Each variant is a struct with one
//! accessor per field the catalog declares:
//!
//! - integers (`Cause`, `ListItems`, `ChannelState`, ...) as `i64`;
//! - two-valued fields (`Yes`/`No`, `0`/`1`, ...) as `bool`;
//! - documented value sets as enums in [`enums`], with an `Other(String)` case that keeps
//!   any value a newer Asterisk sends;
//! - channel and bridge snapshots as the shared views [`events::ChannelSnapshot`] and
//!   [`events::BridgeSnapshot`] (`d.dest().uniqueid()` on a `DialBegin`);
//! - repeatable fields (`Variable`, `ChanVariable`, `Output`) as lists, one element per
//!   header in wire order (a value that is not UTF-8 shown with U+FFFD for its bad bytes
//!   and reported by `issues()`, so positions never shift);
//! - text as `&str` borrowed from the message.
//!
//! Every accessor returns `Option` (or a possibly empty list): the catalog itself notes that
//! documented fields are often absent. Nothing is ever lost: [`Event::message`] is the
//! message exactly as received, [`Event::issues`] lists each field whose value does not
//! parse as its declared type (its accessor returns `None`, the raw value stays in the
//! message), and [`Event::undeclared_fields`] lists the headers the catalog does not know
//! (a `UserEvent`'s own headers). An event the catalog does not know is
//! [`Event::Unknown`].
//!
//! The catalog has 181 documented events and 56 found only in the C source; the 43 of those
//! whose fields are known are typed too (`QueueMember`, `QueueSummary`, list completions).
//!
//! The adapters hand out [`ami_proto::StreamItem`]s; [`TypedItem::typed`] views one as an
//! [`Event`] (`None` for a gap, a mark or a session boundary), so typed consumers read the same bounded queue as
//! everyone else.
//!
//! ## Actions
//!
//! One builder per action in [`actions`]: required parameters are arguments of `new`,
//! optional ones are methods (setting one again replaces it), repeatable ones (`Variable`)
//! add a header per call, indexed ones (`UpdateConfig`'s `Action-000000`) take the index,
//! `UserEvent` takes headers of the caller's choosing (`header(key, value)`), and the event
//! mask of `Events` and `Login` is an [`actions::EventMask`] (`true` / `false`, or a class
//! list checked against the classes Asterisk knows).
//! A builder becomes an [`ami_proto::Action`] with `into()`; the client assigns the
//! ActionID. [`actions::TypedAction::Response`] is a typed view of the response (`Ping`,
//! `Getvar`, `CoreSettings`, `CoreStatus`, `ExtensionState`, `MailboxCount`, ...; plain
//! [`actions::Ack`] for the others), and list actions implement [`actions::ListAction`],
//! which names the item and completion events.
//!
//! ## Features
//!
//! `serde`: typed events serialise as maps from wire header names to typed values (numbers,
//! booleans, strings; repeated headers as lists).
#![forbid(unsafe_code)]

#[macro_use]
mod macros;

mod action;
mod event;
pub mod originate;
pub mod read;
pub mod spec;
mod stream;

#[cfg(feature = "serde")]
mod serde_impl;

#[rustfmt::skip]
mod generated;

pub use generated::events::Event;
pub use read::{FieldIssue, FieldValue, Reading};
pub use stream::TypedItem;

/// Typed views of every event the catalog knows, and the snapshot views they share.
pub mod events {
    pub use crate::event::FromEvent;
    pub use crate::generated::events::*;
}

/// Enums of documented values, each with an `Other(String)` case.
pub mod enums {
    pub use crate::generated::enums::*;
}

/// Typed action builders and typed response views.
pub mod actions {
    pub use crate::action::{
        Ack, EventMask, InvalidEventMask, ListAction, Params, ResponseView, TypedAction,
    };
    pub use crate::generated::actions::*;
}
