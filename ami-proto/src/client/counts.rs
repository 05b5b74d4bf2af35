//! Counters keyed by a field-less enum: a [`Counts`] is read with the kind itself, never
//! with an index or a string.

use std::marker::PhantomData;

/// Most kinds a [`Counted`] enum may have (the counters are a fixed array).
pub(crate) const SLOTS: usize = 16;

/// A field-less enum whose values are counted in [`Counts`]:
/// [`OutcomeKind`](crate::OutcomeKind) and [`DisconnectKind`](crate::DisconnectKind).
pub trait Counted: Copy + Eq + std::fmt::Debug + 'static {
    /// Every kind, in counter order.
    const ALL: &'static [Self];
    /// A stable snake_case name, for metrics and logs.
    fn as_str(self) -> &'static str;
    /// The kind's place in [`ALL`](Self::ALL).
    #[doc(hidden)]
    fn slot(self) -> usize;
}

/// How many times each kind `K` happened.
#[derive(Clone, PartialEq, Eq)]
pub struct Counts<K> {
    n: [u64; SLOTS],
    kind: PhantomData<K>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            n: [0; SLOTS],
            kind: PhantomData,
        }
    }
}

impl<K: Counted> Counts<K> {
    /// How many times `kind` happened.
    pub fn get(&self, kind: K) -> u64 {
        self.n[kind.slot()]
    }

    /// The sum over every kind.
    pub fn total(&self) -> u64 {
        self.n.iter().sum()
    }

    /// Each kind with its count, in counter order (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (K, u64)> + '_ {
        K::ALL.iter().map(|&k| (k, self.get(k)))
    }

    /// Counts one more `kind`.
    pub(crate) fn add(&mut self, kind: K) {
        self.n[kind.slot()] += 1;
    }

    /// Adds `other`'s counts to these (fleet-wide totals).
    pub fn merge(&mut self, other: &Counts<K>) {
        for (n, o) in self.n.iter_mut().zip(other.n) {
            *n += o;
        }
    }
}

impl<K: Counted> std::fmt::Debug for Counts<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, n)| (k.as_str(), n)))
            .finish()
    }
}

/// Declares a field-less counted enum: variants with their stable names, `ALL`, `as_str()`.
macro_rules! counted {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $str:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every kind, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// A stable snake_case name, for metrics and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $str,)+
                }
            }
        }

        impl $crate::client::counts::Counted for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn slot(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        const _: () = assert!($name::ALL.len() <= $crate::client::counts::SLOTS);
    };
}

#[cfg(test)]
mod tests {
    use crate::{DisconnectKind, OutcomeKind};

    use super::*;

    #[test]
    fn counts_are_read_with_the_kind_they_were_added_with() {
        let mut c = Counts::<OutcomeKind>::default();
        c.add(OutcomeKind::Success);
        c.add(OutcomeKind::Success);
        c.add(OutcomeKind::Unknown);
        assert_eq!(c.get(OutcomeKind::Success), 2);
        assert_eq!(c.get(OutcomeKind::Unknown), 1);
        assert_eq!(c.get(OutcomeKind::Cancelled), 0);
        assert_eq!(c.total(), 3);
        let mut other = Counts::default();
        other.add(OutcomeKind::Cancelled);
        c.merge(&other);
        assert_eq!(c.get(OutcomeKind::Cancelled), 1);
        assert_eq!(c.total(), 4);
    }

    #[test]
    fn iteration_and_debug_follow_the_kinds_in_order_with_their_names() {
        let mut c = Counts::<DisconnectKind>::default();
        c.add(DisconnectKind::Eof);
        let all: Vec<_> = c.iter().collect();
        assert_eq!(all.len(), DisconnectKind::ALL.len());
        assert_eq!(all[0], (DisconnectKind::ConnectFailed, 0));
        assert!(all.contains(&(DisconnectKind::Eof, 1)));
        let debug = format!("{c:?}");
        assert!(debug.starts_with("{\"connect_failed\": 0,"), "{debug}");
        assert!(debug.contains("\"eof\": 1"), "{debug}");
    }

    #[test]
    fn every_kind_has_its_own_slot_and_name() {
        for (i, k) in OutcomeKind::ALL.iter().enumerate() {
            assert_eq!(Counted::slot(*k), i);
            assert_eq!(k.to_string(), k.as_str());
        }
        for (i, k) in DisconnectKind::ALL.iter().enumerate() {
            assert_eq!(Counted::slot(*k), i);
        }
        let names: std::collections::HashSet<_> =
            DisconnectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), DisconnectKind::ALL.len());
    }

    #[test]
    fn a_reason_and_an_outcome_name_their_kind() {
        let reason = crate::DisconnectReason::LoginRejected {
            message: "Authentication failed".into(),
        };
        assert_eq!(reason.kind(), DisconnectKind::LoginRejected);
        assert_eq!(reason.kind().as_str(), "login_rejected");
        assert_eq!(
            OutcomeKind::of(&Err(crate::ActionError::Cancelled)),
            OutcomeKind::Cancelled
        );
    }
}
