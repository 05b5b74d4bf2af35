//! The shapes every generated item shares, written once. The generator emits one line per
//! event, response, enum or action into these macros plus the accessors that differ.

/// A typed view over one message: a struct holding `&Message`, its spec, and the traits.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $spec:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(&'a ::ami_proto::Message);

        impl<'a> $name<'a> {
            /// The message this view reads: every header as sent, nothing lost.
            pub fn message(&self) -> &'a ::ami_proto::Message {
                self.0
            }

            /// What the catalog declares for this message.
            pub fn spec() -> &'static $crate::spec::MessageSpec {
                &$spec
            }

            /// Fields whose value does not parse as the declared type (empty when all do).
            pub fn issues(&self) -> Vec<$crate::FieldIssue<'a>> {
                $crate::event::issues(&$spec, self.0)
            }
        }

        impl ::std::fmt::Debug for $name<'_> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(self.0).finish()
            }
        }

        #[cfg(feature = "serde")]
        impl ::serde::Serialize for $name<'_> {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                $crate::serde_impl::serialize(Some(&$spec), self.0, s)
            }
        }
    };
}

/// All typed events: one view struct each, and the [`crate::Event`] enum over them.
macro_rules! events {
    ($($(#[$doc:meta])* $name:ident = $idx:literal, $wire:literal;)*) => {
        $(
            view!($(#[$doc])* $name, EVENT_SPECS[$idx]);

            impl<'a> $name<'a> {
                /// The `Event:` value on the wire.
                pub const NAME: &'static str = $wire;

                /// This event's view of `m`, if `m` is this event (name compared ignoring ASCII
                /// case).
                pub fn from_message(m: &'a ::ami_proto::Message) -> Option<Self> {
                    m.event().filter(|n| n.eq_ignore_ascii_case(Self::NAME)).map(|_| $name(m))
                }

                /// The `ActionID` of a list item or follow-up event.
                pub fn action_id(&self) -> Option<&'a str> {
                    self.0.action_id()
                }
            }

            impl<'a> $crate::event::FromEvent<'a> for $name<'a> {
                fn from_event(m: &'a ::ami_proto::Message) -> Option<Self> {
                    Self::from_message(m)
                }
            }

            impl<'a> From<$name<'a>> for $crate::Event<'a> {
                fn from(e: $name<'a>) -> Self {
                    $crate::Event::$name(e)
                }
            }
        )*

        /// An AMI event, typed: one variant per event the catalog knows, [`Event::Unknown`]
        /// for the rest. Built with [`Event::from_message`]; every variant gives back its
        /// [`Message`](ami_proto::Message).
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        #[non_exhaustive]
        pub enum Event<'a> {
            $($(#[$doc])* $name($name<'a>),)*
            /// An event (or any message) the catalog does not know: kept whole.
            Unknown(&'a ::ami_proto::Message),
        }

        impl<'a> Event<'a> {
            pub(crate) fn from_index(index: usize, m: &'a ::ami_proto::Message) -> Self {
                match index {
                    $($idx => Event::$name($name(m)),)*
                    _ => Event::Unknown(m),
                }
            }

            /// The message this event was read from, exactly as it arrived.
            pub fn message(&self) -> &'a ::ami_proto::Message {
                match self {
                    $(Event::$name(e) => e.0,)*
                    Event::Unknown(m) => m,
                }
            }

            /// What the catalog declares for this event; `None` for [`Event::Unknown`].
            pub fn spec(&self) -> Option<&'static $crate::spec::MessageSpec> {
                match self {
                    $(Event::$name(_) => Some(&EVENT_SPECS[$idx]),)*
                    Event::Unknown(_) => None,
                }
            }
        }
    };
}

/// A typed response view, readable from any `Response:` message.
macro_rules! responses {
    ($($(#[$doc:meta])* $name:ident = $idx:literal,)*) => {
        $(
            view!($(#[$doc])* $name, RESPONSE_SPECS[$idx]);

            impl<'a> $crate::action::ResponseView<'a> for $name<'a> {
                fn from_response(m: &'a ::ami_proto::Message) -> Self {
                    $name(m)
                }
            }
        )*
    };
}

/// An enum of documented values with an `Other(String)` case for values a newer Asterisk
/// may send.
macro_rules! ami_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[doc = concat!("`", $wire, "`")]
                $variant,
            )*
            /// A value the catalog does not list, kept as sent.
            Other(String),
        }

        impl $name {
            /// The documented values, in the catalog's order.
            pub const VALUES: &'static [&'static str] = &[$($wire),*];

            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => $name::$variant,)*
                    _ => $name::Other(s.to_owned()),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

/// The shared parts of a typed action builder.
macro_rules! action {
    ($name:ident, $wire:literal, $response:ident) => {
        impl $name {
            /// The parameters set so far.
            pub fn params(&self) -> &$crate::action::Params {
                &self.0
            }

            #[allow(dead_code)] // actions without optional parameters
            fn with(mut self, key: &'static str, value: impl ::std::fmt::Display) -> Self {
                self.0.set(key.into(), value.to_string());
                self
            }
        }

        impl From<$name> for ::ami_proto::Action {
            fn from(a: $name) -> Self {
                a.0.to_action()
            }
        }

        impl $crate::action::TypedAction for $name {
            const NAME: &'static str = $wire;
            type Response<'a> = $response<'a>;
        }
    };
}
