//! `ami decode FILE`: a raw capture as JSON lines; decoder problems on stderr.

use crate::json;
use crate::printer::stdout_end;
use crate::terminal::say;
use crate::{Failure, EXIT_USAGE};
use ami_proto::{Decoder, DecoderLimits, Frame, MessageKind, BANNER_PREFIX};
use std::io::{Read, Write};

/// Bytes read at a time: memory stays this plus the decoder's own cap, whatever the input.
const CHUNK: usize = 64 << 10;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The capture file (bytes as the server sent them); `-` reads standard input.
    file: std::path::PathBuf,
    /// Print events through the typed layer (header names as on the wire, typed
    /// values) and report every field that does not parse as its declared type.
    #[arg(long)]
    typed: bool,
}

/// Whether `line`, a capture's first (with or without its line end), is a server's banner
/// rather than a message's first header: Asterisk's `Asterisk Call Manager/11.0.0`, or any
/// other line without the colon every header has. A capture cut after the banner, or of
/// what a client sent, starts with a message.
fn is_banner(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.starts_with(BANNER_PREFIX.as_bytes()) || (!line.is_empty() && !line.contains(&b':'))
}

/// A decoder for the capture that begins with `head`: one that takes its first line as the
/// banner only if it is one.
fn decoder_for(head: &[u8]) -> Decoder {
    let first = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head, |end| &head[..=end]);
    if is_banner(first) {
        Decoder::new(DecoderLimits::default())
    } else {
        Decoder::without_banner(DecoderLimits::default())
    }
}

/// Feeds `bytes` to `decoder` and writes what it decodes. `Ok(Err(_))`: stdout failed.
fn pump(
    decoder: &mut Decoder,
    mut bytes: &[u8],
    typed: bool,
    report: &mut json::TypedReport,
    out: &mut impl Write,
) -> Result<std::io::Result<()>, Failure> {
    while !bytes.is_empty() {
        let n = decoder.feed(bytes);
        bytes = &bytes[n..];
        while let Some(frame) = decoder.decode() {
            let written = match frame {
                Ok(Frame::Message(m))
                    // An action with a secret (an `Action` header after an `Event` line):
                    // the typed layer would print the secret; the shared schema masks it.
                    if typed && m.kind() == MessageKind::Event && !ami_json::hides_a_secret(&m) =>
                {
                    writeln!(out, "{}", report.typed_line(&m)?)
                }
                Ok(Frame::Message(m)) => writeln!(out, "{}", json::message(&m)?),
                Ok(Frame::Banner(b)) => {
                    say!("ami: banner: {}", b.text());
                    Ok(())
                }
                Err(e) => {
                    say!("ami: decode error: {e}");
                    Ok(())
                }
            };
            if written.is_err() {
                return Ok(written);
            }
        }
    }
    Ok(Ok(()))
}

pub(crate) fn run(args: &Args) -> Result<(), Failure> {
    let file = &args.file;
    let cannot_read = |e: std::io::Error| {
        Failure::new(EXIT_USAGE, format!("cannot read {}: {e}", file.display()))
    };
    // Streamed in chunks, never read whole: a day's capture can be larger than memory, and
    // `-` (a pipe from tcpdump or a FIFO) has no end to read to.
    let mut input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).map_err(cannot_read)?)
    };
    // The decoder is made once the first line is in (or CHUNK bytes without a line end, or
    // the end of the input): until then what is read waits in `head`.
    let mut decoder: Option<Decoder> = None;
    let mut head: Vec<u8> = Vec::new();
    let mut report = json::TypedReport::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let k = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(cannot_read(e)),
        };
        let read = &chunk[..k];
        let written = match decoder.as_mut() {
            Some(d) => pump(d, read, args.typed, &mut report, &mut out)?,
            None => {
                head.extend_from_slice(read);
                if !head.contains(&b'\n') && head.len() < CHUNK {
                    continue;
                }
                let d = decoder.insert(decoder_for(&head));
                pump(
                    d,
                    &std::mem::take(&mut head),
                    args.typed,
                    &mut report,
                    &mut out,
                )?
            }
        };
        if written.is_err() {
            // `ami decode capture.raw | head` has had enough: stop reading, quietly.
            return stdout_end(&written);
        }
        // What a read brought is printed before the next read waits: a live pipe's lines
        // show as they come, and a file still writes in large blocks.
        let flushed = out.flush();
        if flushed.is_err() {
            return stdout_end(&flushed);
        }
    }
    // Input that ended before its first line did.
    let decoder = match decoder {
        Some(d) => d,
        None => {
            let mut d = decoder_for(&head);
            let written = pump(&mut d, &head, args.typed, &mut report, &mut out)?;
            if written.is_err() {
                return stdout_end(&written);
            }
            d
        }
    };
    let flushed = out.flush();
    if flushed.is_err() {
        return stdout_end(&flushed);
    }
    let s = decoder.stats();
    if decoder.buffered() > 0 {
        say!(
            "ami: {} trailing bytes without a message end",
            decoder.buffered()
        );
    }
    say!(
        "ami: {} messages, {} decode errors",
        s.messages,
        s.lines_too_long + s.messages_too_large + s.too_many_fields
    );
    if args.typed {
        say!("ami: {report}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_banner;

    #[test]
    fn only_a_first_line_that_looks_like_a_banner_is_taken_for_one() {
        assert!(is_banner(b"Asterisk Call Manager/11.0.0\r\n"));
        assert!(is_banner(b"Asterisk Call Manager/11.0.0"));
        assert!(is_banner(b"Some Other Manager/1.0\n"));
        assert!(!is_banner(b"Response: Success\r\n"));
        assert!(!is_banner(b"Action: Login\r\n"));
        assert!(!is_banner(b"\r\n"));
        assert!(!is_banner(b""));
    }
}
