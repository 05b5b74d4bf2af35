//! Decoder limits: every buffer the decoder owns has a named cap with a reason.

use thiserror::Error;

/// Caps that bound the decoder's memory use, whatever the server sends.
///
/// Asterisk itself puts no limit on outbound line length, header count or message size
/// (Command output, `GetConfig` and `Status` with `AllVariables` grow without bound), so the
/// defaults are generous and follow the protocol reference's suggestion: 1 MiB per line,
/// 16 MiB per message, 10,000 fields, and 1 MiB for a legacy `Response: Follows`. Worst-case
/// decoder memory is `buffer_cap` bytes of wire data plus `max_fields` field records (16 bytes
/// each) for the message being assembled; a message handed out owns a copy of its own bytes
/// (or, when large, the buffer trimmed to it), never a larger shared buffer.
///
/// Build one with [`DecoderLimits::builder`]; a combination that cannot work is refused by
/// [`DecoderLimitsBuilder::build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    max_line_len: usize,
    max_message_len: usize,
    max_fields: usize,
    max_follows_len: usize,
    buffer_cap: usize,
}

/// Default longest line, without its line ending: 1 MiB. One `Output:` line of a Command or
/// one `ChanVariable` can be long, but a megabyte on one line means a broken peer.
pub const DEFAULT_MAX_LINE_LEN: usize = 1 << 20;
/// Default largest message, line endings included: 16 MiB. Enough for `CoreShowChannels`
/// items or a Command that prints a whole dialplan (each list item is its own message).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 << 20;
/// Default most fields in one message: 10,000. `PJSIPShowEndpoint` sends ~150; a Command
/// with long output sends one field per line.
pub const DEFAULT_MAX_FIELDS: usize = 10_000;
/// Default largest legacy `Response: Follows` (Asterisk 13 and older Command output): 1 MiB.
/// Its body has no structure until `--END COMMAND--`, so one that never ends would swallow
/// every event after it; past this size the decoder gives up on it, counts the loss and
/// resynchronises on the first message start after its headers. Command output beyond 1 MiB
/// (a huge `dialplan show`) needs a larger value.
pub const DEFAULT_MAX_FOLLOWS_LEN: usize = 1 << 20;
/// Default decoder buffer cap: the largest message plus 64 KiB, so a full message and one
/// typical socket read always fit.
pub const DEFAULT_BUFFER_CAP: usize = DEFAULT_MAX_MESSAGE_LEN + (64 << 10);

/// The shortest message delimiter: an empty line made of a bare LF after the last line's LF.
const MIN_DELIMITER_LEN: usize = 2;

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_line_len: DEFAULT_MAX_LINE_LEN,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_fields: DEFAULT_MAX_FIELDS,
            max_follows_len: DEFAULT_MAX_FOLLOWS_LEN,
            buffer_cap: DEFAULT_BUFFER_CAP,
        }
    }
}

impl DecoderLimits {
    /// A builder that starts from the defaults.
    pub fn builder() -> DecoderLimitsBuilder {
        DecoderLimitsBuilder {
            limits: DecoderLimits::default(),
        }
    }
    /// Longest accepted line in bytes, without its line ending.
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }
    /// Largest accepted message in bytes, line endings included.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }
    /// Most fields accepted in one message.
    pub fn max_fields(&self) -> usize {
        self.max_fields
    }
    /// Largest accepted legacy `Response: Follows` message, line endings included (never
    /// more than [`max_message_len`](Self::max_message_len)).
    pub fn max_follows_len(&self) -> usize {
        self.max_follows_len.min(self.max_message_len)
    }
    /// Most bytes the decoder ever buffers.
    pub fn buffer_cap(&self) -> usize {
        self.buffer_cap
    }
    /// Most memory one decoded message can keep alive: its bytes and its field table (see
    /// [`Message::retained_bytes`](crate::Message::retained_bytes)). Queues and lists that
    /// must hold at least one message are refused below this.
    pub fn max_message_memory(&self) -> usize {
        self.max_message_len
            .saturating_add(self.max_fields.saturating_mul(FIELD_RECORD_LEN))
    }
}

/// Bytes of one field record in a decoded message.
const FIELD_RECORD_LEN: usize = std::mem::size_of::<crate::wire::message::FieldSpan>();

/// Builds [`DecoderLimits`], refusing combinations that cannot work.
#[derive(Debug, Clone)]
pub struct DecoderLimitsBuilder {
    limits: DecoderLimits,
}

impl DecoderLimitsBuilder {
    /// Longest accepted line in bytes, without its line ending.
    pub fn max_line_len(mut self, n: usize) -> Self {
        self.limits.max_line_len = n;
        self
    }
    /// Largest accepted message in bytes, line endings included.
    pub fn max_message_len(mut self, n: usize) -> Self {
        self.limits.max_message_len = n;
        self
    }
    /// Most fields accepted in one message.
    pub fn max_fields(mut self, n: usize) -> Self {
        self.limits.max_fields = n;
        self
    }
    /// Largest accepted legacy `Response: Follows` message, line endings included (the
    /// message limit applies too).
    pub fn max_follows_len(mut self, n: usize) -> Self {
        self.limits.max_follows_len = n;
        self
    }
    /// Most bytes the decoder ever buffers.
    pub fn buffer_cap(mut self, n: usize) -> Self {
        self.limits.buffer_cap = n;
        self
    }
    /// Checks the limits against each other and returns them.
    pub fn build(self) -> Result<DecoderLimits, LimitsError> {
        let l = self.limits;
        if l.max_line_len == 0
            || l.max_message_len == 0
            || l.max_fields == 0
            || l.max_follows_len == 0
        {
            return Err(LimitsError::Zero);
        }
        if l.max_message_len > u32::MAX as usize {
            return Err(LimitsError::MessageTooLargeForIndex {
                max_message_len: l.max_message_len,
            });
        }
        if l.max_line_len > l.max_message_len {
            return Err(LimitsError::LineLongerThanMessage {
                max_line_len: l.max_line_len,
                max_message_len: l.max_message_len,
            });
        }
        let needed = l.max_message_len.saturating_add(MIN_DELIMITER_LEN);
        if l.buffer_cap < needed {
            return Err(LimitsError::BufferBelowMessage {
                buffer_cap: l.buffer_cap,
                needed,
            });
        }
        Ok(l)
    }
}

/// A [`DecoderLimits`] combination that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A limit of zero would refuse every message.
    #[error("decoder limits must be non-zero")]
    Zero,
    /// Field positions are stored as 32-bit offsets.
    #[error("max_message_len {max_message_len} exceeds the 4 GiB field index range")]
    MessageTooLargeForIndex {
        /// The refused value.
        max_message_len: usize,
    },
    /// A line can never be longer than the message that holds it.
    #[error("max_line_len {max_line_len} exceeds max_message_len {max_message_len}")]
    LineLongerThanMessage {
        /// The configured line limit.
        max_line_len: usize,
        /// The configured message limit.
        max_message_len: usize,
    },
    /// The buffer could never hold a message of the allowed size.
    #[error("buffer_cap {buffer_cap} is below max_message_len plus its delimiter ({needed})")]
    BufferBelowMessage {
        /// The configured buffer cap.
        buffer_cap: usize,
        /// The smallest cap that works with the configured message size.
        needed: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(
            DecoderLimits::builder().build(),
            Ok(DecoderLimits::default())
        );
    }

    #[test]
    fn buffer_cap_below_message_size_is_refused() {
        let err = DecoderLimits::builder()
            .max_message_len(4096)
            .max_line_len(1024)
            .buffer_cap(4097)
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            LimitsError::BufferBelowMessage {
                buffer_cap: 4097,
                needed: 4098
            }
        );
        assert!(err.to_string().contains("buffer_cap 4097"));
    }

    #[test]
    fn line_longer_than_message_is_refused() {
        let err = DecoderLimits::builder()
            .max_message_len(100)
            .max_line_len(200)
            .buffer_cap(1000)
            .build();
        assert!(matches!(
            err,
            Err(LimitsError::LineLongerThanMessage { .. })
        ));
    }

    #[test]
    fn zero_limits_are_refused() {
        assert_eq!(
            DecoderLimits::builder().max_fields(0).build(),
            Err(LimitsError::Zero)
        );
    }

    #[test]
    fn each_limit_set_to_zero_alone_is_refused() {
        let zeroed: [fn(DecoderLimitsBuilder) -> DecoderLimitsBuilder; 4] = [
            |b| b.max_line_len(0),
            |b| b.max_message_len(0),
            |b| b.max_fields(0),
            |b| b.max_follows_len(0),
        ];
        for (i, zero) in zeroed.into_iter().enumerate() {
            assert_eq!(
                zero(DecoderLimits::builder()).build(),
                Err(LimitsError::Zero),
                "limit {i}"
            );
        }
    }

    #[test]
    fn a_buffer_cap_of_exactly_a_message_and_its_delimiter_is_accepted() {
        let limits = DecoderLimits::builder()
            .max_message_len(4096)
            .max_line_len(1024)
            .buffer_cap(4096 + MIN_DELIMITER_LEN)
            .build()
            .unwrap();
        assert_eq!(limits.buffer_cap(), 4098);
    }

    #[test]
    fn the_default_buffer_holds_one_maximal_message_and_a_64_kib_read() {
        let limits = DecoderLimits::default();
        assert_eq!(limits.buffer_cap(), limits.max_message_len() + 65_536);
        assert_eq!(limits.buffer_cap(), 16 * 1024 * 1024 + 64 * 1024);
    }

    /// Field offsets are `u32`: the largest message they can index is accepted, one byte
    /// more is refused.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_message_limit_past_the_32_bit_field_index_is_refused() {
        let at_range = u32::MAX as usize;
        let build = |n: usize| {
            DecoderLimits::builder()
                .max_message_len(n)
                .buffer_cap(n + MIN_DELIMITER_LEN)
                .build()
        };
        assert_eq!(build(at_range).map(|l| l.max_message_len()), Ok(at_range));
        assert_eq!(
            build(at_range + 1),
            Err(LimitsError::MessageTooLargeForIndex {
                max_message_len: at_range + 1
            })
        );
    }
}
