//! Body decoding: one [`BodyDecoder`] for every [`Framing`].

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{ChunkedDecoder, Framing, Http1Error, Limits};

/// What one decode call did with its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// How many bytes from the front of the input were used (data and framing). The rest,
    /// if any, is more body for the next call or, once the body is done, the next message.
    pub consumed: usize,
    /// The body bytes found, as a range of the input within `..consumed`; empty when none.
    pub data: Range<usize>,
}

/// Reads a body of known length: a remaining-bytes counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthDecoder {
    remaining: u64,
}

impl LengthDecoder {
    /// A decoder for a body of `len` bytes.
    pub fn new(len: u64) -> LengthDecoder {
        LengthDecoder { remaining: len }
    }

    /// Body bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Takes up to the remaining length from the front of `input`, all of it data.
    pub fn decode(&mut self, input: &[u8]) -> Decoded {
        let n = self.remaining.min(input.len() as u64) as usize;
        self.remaining -= n as u64;
        Decoded {
            consumed: n,
            data: 0..n,
        }
    }
}

/// The body decoder for one message, chosen by its [`Framing`].
#[derive(Clone, Debug)]
pub enum BodyDecoder {
    /// No body: done from the start.
    Empty,
    /// [`Framing::ContentLength`].
    Length(LengthDecoder),
    /// [`Framing::Chunked`].
    Chunked(ChunkedDecoder),
    /// [`Framing::CloseDelimited`]: every byte is body until the peer closes.
    UntilClose,
}

impl BodyDecoder {
    /// The decoder for `framing`; `limits` bounds chunked bodies (Content-Length was checked
    /// against `max_body_bytes` when the framing was decided).
    pub fn new(framing: Framing, limits: &Limits) -> BodyDecoder {
        match framing {
            Framing::None => BodyDecoder::Empty,
            Framing::ContentLength(len) => BodyDecoder::Length(LengthDecoder::new(len)),
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
            Framing::CloseDelimited => BodyDecoder::UntilClose,
        }
    }

    /// Whether the body is complete; a close-delimited body never is, until
    /// [`BodyDecoder::finish`].
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Empty => true,
            BodyDecoder::Length(d) => d.is_done(),
            BodyDecoder::Chunked(d) => d.is_done(),
            BodyDecoder::UntilClose => false,
        }
    }

    /// Decodes from the front of `input`: at most one contiguous data range per call. Call
    /// again with the unconsumed rest while it is non-empty and the body is not done; a
    /// call that consumes nothing needs more input (or the body is done).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Http1Error> {
        match self {
            BodyDecoder::Empty => Ok(Decoded {
                consumed: 0,
                data: 0..0,
            }),
            BodyDecoder::Length(d) => Ok(d.decode(input)),
            BodyDecoder::Chunked(d) => d.decode(input),
            BodyDecoder::UntilClose => Ok(Decoded {
                consumed: input.len(),
                data: 0..input.len(),
            }),
        }
    }

    /// Like [`BodyDecoder::decode`] on a read buffer: splits what it consumed off `buf` and
    /// returns the data as a zero-copy [`Bytes`]. `None` means `buf` holds no more body
    /// bytes: read more, unless [`BodyDecoder::is_done`].
    pub fn next_chunk(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Http1Error> {
        let decoded = self.decode(buf)?;
        if decoded.consumed == 0 {
            return Ok(None);
        }
        let taken = buf.split_to(decoded.consumed);
        if decoded.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(taken.freeze().slice(decoded.data)))
    }

    /// Tells the decoder the peer closed the connection: fine for a close-delimited or
    /// finished body, [`Http1Error::IncompleteBody`] otherwise.
    pub fn finish(&self) -> Result<(), Http1Error> {
        match self {
            BodyDecoder::UntilClose => Ok(()),
            done if done.is_done() => Ok(()),
            _ => Err(Http1Error::IncompleteBody),
        }
    }
}
