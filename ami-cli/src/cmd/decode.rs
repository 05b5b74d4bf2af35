//! `ami decode FILE`: a raw capture as JSON lines; decoder problems on stderr.

use crate::json;
use crate::printer::stdout_end;
use crate::terminal::say;
use crate::{Failure, EXIT_USAGE};
use ami_proto::{Decoder, DecoderLimits, Frame, MessageKind};
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
    let mut decoder = Decoder::new(DecoderLimits::default());
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
        let mut rest = &chunk[..k];
        while !rest.is_empty() {
            let n = decoder.feed(rest);
            rest = &rest[n..];
            while let Some(frame) = decoder.decode() {
                let written = match frame {
                    Ok(Frame::Message(m)) if args.typed && m.kind() == MessageKind::Event => {
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
                    // `ami decode capture.raw | head` has had enough: stop reading, quietly.
                    return stdout_end(&written);
                }
            }
        }
        // What a read brought is printed before the next read waits: a live pipe's lines
        // show as they come, and a file still writes in large blocks.
        let flushed = out.flush();
        if flushed.is_err() {
            return stdout_end(&flushed);
        }
    }
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
