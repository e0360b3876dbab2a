//! The chunked transfer coding (RFC 9112 §7.1): a streaming decoder. The encoding helpers
//! are in `serialize`.

use super::headers::{is_field_value_byte, is_tchar};
use super::{Decoded, Http1Error, Limits};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first hex digit of a chunk size.
    SizeStart,
    /// In the hex digits.
    Size,
    /// Whitespace after the size; only more whitespace or `;` may follow.
    SizeWs,
    /// In chunk extensions, which are skipped.
    Ext,
    /// CR seen after the size line.
    SizeLf,
    /// In chunk data; `remaining` bytes left.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line or of the final CRLF.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    /// CR seen at the end of a trailer line.
    TrailerLf,
    /// CR seen on the empty line ending the body.
    EndLf,
    /// The body is complete.
    Done,
}

/// A streaming decoder of a chunked body.
///
/// Feed it any slices; a size line, a CRLF or a trailer may be split at any byte. Each call
/// to [`ChunkedDecoder::decode`] yields at most one contiguous range of data. Strictness:
/// every line ends in CRLF (a bare LF is [`Http1Error::BareLf`]); a size is 1*HEXDIG that
/// fits in a `u64`, optionally followed by `;` extensions, which are skipped (but count
/// towards `max_chunk_line_bytes`); whitespace after the size is allowed only before a `;`. Trailer fields are checked for `name: value`
/// shape, bounded by `max_trailer_bytes` and discarded: the proxy re-frames bodies and ends
/// them with [`LAST_CHUNK`](super::LAST_CHUNK). The sum of chunk sizes is checked against
/// `max_body_bytes` as each size is read, before its data arrives.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The size being read, then the data left in the current chunk.
    remaining: u64,
    line: usize,
    trailer: usize,
    total: u64,
    max_body: Option<u64>,
    max_line: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body, bounded by `limits`.
    pub fn new(limits: &Limits) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::SizeStart,
            remaining: 0,
            line: 0,
            trailer: 0,
            total: 0,
            max_body: limits.max_body_bytes,
            max_line: limits.max_chunk_line_bytes,
            max_trailer: limits.max_trailer_bytes,
        }
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes announced by the chunk sizes read so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Consumes framing from `input` until it reaches chunk data, the end of the body or the
    /// end of `input`. Returns how much was consumed and the range of `input` holding data
    /// (empty when none). Bytes after the end of the body are left unconsumed.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Http1Error> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let available = (input.len() - pos) as u64;
                    let n = self.remaining.min(available) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded {
                        consumed: pos + n,
                        data: pos..pos + n,
                    });
                }
                _ => {
                    self.step(input[pos])?;
                    pos += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: pos,
            data: pos..pos,
        })
    }

    /// Advances the framing state machine by one byte (never called in `Data` or `Done`).
    fn step(&mut self, b: u8) -> Result<(), Http1Error> {
        use State::*;
        if b == b'\n' && !matches!(self.state, SizeLf | DataLf | TrailerLf | EndLf) {
            return Err(Http1Error::BareLf);
        }
        match (self.state, b) {
            (SizeStart | Size, _) if hex_value(b).is_some() => {
                if self.remaining > u64::MAX >> 4 {
                    return Err(Http1Error::ChunkSizeOverflow);
                }
                self.remaining = self.remaining << 4 | u64::from(hex_value(b).unwrap_or(0));
                self.state = Size;
                self.count_line()?;
            }
            (Size, b'\r') => self.state = SizeLf,
            (Size | SizeWs, b' ' | b'\t') => {
                self.state = SizeWs;
                self.count_line()?;
            }
            (Size | SizeWs, b';') => {
                self.state = Ext;
                self.count_line()?;
            }
            (SizeStart | Size | SizeWs, _) => return Err(Http1Error::InvalidChunkSize),
            (Ext, b'\r') => self.state = SizeLf,
            (Ext, _) if is_field_value_byte(b) => self.count_line()?,
            (Ext, _) => return Err(framing("control character in chunk extension")),
            (SizeLf, b'\n') => self.end_size_line()?,
            (SizeLf, _) => return Err(framing("missing LF after chunk size")),
            (DataCr, b'\r') => self.state = DataLf,
            (DataLf, b'\n') => {
                self.state = SizeStart;
                self.line = 0;
            }
            (DataCr | DataLf, _) => return Err(framing("missing CRLF after chunk data")),
            (TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf, _) => {
                self.trailer_byte(b)?;
            }
            // `decode` handles these two itself.
            (Data | Done, _) => {}
        }
        Ok(())
    }

    /// Counts one more byte of the size line against `max_chunk_line_bytes`.
    fn count_line(&mut self) -> Result<(), Http1Error> {
        self.line += 1;
        if self.line > self.max_line {
            return Err(Http1Error::ChunkLineTooLong);
        }
        Ok(())
    }

    fn end_size_line(&mut self) -> Result<(), Http1Error> {
        if self.remaining == 0 {
            self.state = State::TrailerStart;
            return Ok(());
        }
        let total = self.total.checked_add(self.remaining);
        let total = total.ok_or(Http1Error::ChunkSizeOverflow)?;
        if self.max_body.is_some_and(|max| total > max) {
            return Err(Http1Error::BodyTooLarge);
        }
        self.total = total;
        self.state = State::Data;
        Ok(())
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), Http1Error> {
        use State::*;
        self.trailer += 1;
        if self.trailer > self.max_trailer {
            return Err(Http1Error::TrailersTooLarge);
        }
        self.state = match (self.state, b) {
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if is_field_value_byte(b) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (TrailerLf | EndLf, _) => return Err(framing("missing LF in trailer section")),
            _ => return Err(Http1Error::InvalidTrailer),
        };
        Ok(())
    }
}

fn framing(what: &'static str) -> Http1Error {
    Http1Error::InvalidChunkedFraming(what)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
