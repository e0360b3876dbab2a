use crate::{ChunkedDecoder, Http1Error, LAST_CHUNK, Limits};

/// Decodes `pieces` as successive reads; returns the data, the bytes consumed in total and
/// whether the body ended, or the first error.
fn decode_pieces(limits: &Limits, pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), Http1Error> {
    let mut decoder = ChunkedDecoder::new(limits);
    let (mut data, mut consumed) = (Vec::new(), 0);
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() && !decoder.is_done() {
            let decoded = decoder.decode(rest)?;
            assert!(decoded.consumed > 0 && decoded.data.end <= decoded.consumed);
            data.extend_from_slice(&rest[decoded.data]);
            consumed += decoded.consumed;
            rest = &rest[decoded.consumed..];
        }
    }
    Ok((data, consumed, decoder.is_done()))
}

pub(super) fn decode(wire: &[u8]) -> Result<(Vec<u8>, usize, bool), Http1Error> {
    decode_pieces(&Limits::default(), &[wire])
}

/// Valid bodies and what they decode to.
const VALID: &[(&[u8], &[u8])] = &[
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"0\r\n\r\n", b""),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"a\r\n0123456789\r\n00\r\n\r\n", b"0123456789"),
    (b"00000000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3;name=value;flag\r\nabc\r\n0;last\r\n\r\n", b"abc"),
    (b"3 ;q=\"a;b\\\" \t\"\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3\t; x\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3;\xff\r\nabc\r\n0\r\n\r\n", b"abc"),
    (
        b"2\r\n\r\n\r\n0\r\nExpires: never\r\nX-Sum:\r\nX-Q: a b\tc\r\n\r\n",
        b"\r\n",
    ),
];

#[test]
fn decodes_valid_bodies_and_stops_at_the_end() {
    for (wire, expected) in VALID {
        let mut with_next = wire.to_vec();
        with_next.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (data, consumed, done) = decode(&with_next).unwrap();
        assert_eq!(&data[..], *expected, "{wire:?}");
        assert_eq!(consumed, wire.len(), "the next message is not consumed");
        assert!(done);
    }
}

#[test]
fn any_split_point_and_byte_at_a_time_give_the_same_result() {
    let invalid: &[&[u8]] = &[
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\nhello\r\n",
        b"0\r\nA: b\r\n\n",
        b"1;\x01\r\nx\r\n",
        b"g\r\n",
        b"10000000000000000\r\n",
        b"0\r\nbad trailer\r\n\r\n",
    ];
    let wires = VALID.iter().map(|(w, _)| *w).chain(invalid.iter().copied());
    for wire in wires {
        let whole = decode(wire);
        for at in 0..=wire.len() {
            let split = decode_pieces(&Limits::default(), &[&wire[..at], &wire[at..]]);
            let got = split.as_ref().map(|r| (&r.0, r.2));
            assert_eq!(got, whole.as_ref().map(|r| (&r.0, r.2)), "{wire:?} at {at}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let one_by_one = decode_pieces(&Limits::default(), &bytes);
        assert_eq!(
            one_by_one.map(|r| r.0),
            whole.map(|r| r.0),
            "{wire:?} byte by byte"
        );
    }
}

#[test]
fn data_is_yielded_as_it_arrives() {
    let mut decoder = ChunkedDecoder::new(&Limits::default());
    let first = decoder.decode(b"a\r\nhel").unwrap();
    assert_eq!((first.consumed, first.data), (6, 3..6));
    let second = decoder.decode(b"lo").unwrap();
    assert_eq!((second.consumed, second.data), (2, 0..2));
    assert_eq!(decoder.total(), 10);
    assert!(!decoder.is_done());
}

#[test]
fn size_errors() {
    use Http1Error::*;
    let cases: &[(&[u8], Http1Error)] = &[
        (b"g\r\n", InvalidChunkSize),
        (b"\r\n", InvalidChunkSize),
        (b";ext\r\n", InvalidChunkSize),
        (b"-1\r\n", InvalidChunkSize),
        (b"0x5\r\n", InvalidChunkSize),
        (b"+5\r\n", InvalidChunkSize),
        (b" 5\r\n", InvalidChunkSize),
        (b"5 \r\n", InvalidChunkSize),
        (b"5 x\r\n", InvalidChunkSize),
        (b"10000000000000000\r\n", ChunkSizeOverflow),
        (b"fffffffffffffffff\r\n", ChunkSizeOverflow),
    ];
    for (wire, expected) in cases {
        assert_eq!(decode(wire).unwrap_err(), *expected, "{wire:?}");
        assert_eq!(expected.status(), 400);
    }
    // The largest size is accepted (its data just never ends here).
    let (data, _, done) = decode(b"ffffffffffffffff\r\nab").unwrap();
    assert_eq!((&data[..], done), (&b"ab"[..], false));
}

#[test]
fn framing_errors() {
    for wire in [
        &b"5\r\nhelloX"[..],
        b"5\r\nhello\rX",
        b"5\rX",
        b"5;a\r\r",
        b"0\r\n\rX",
        b"0\r\nA: b\rX",
    ] {
        let err = decode(wire).unwrap_err();
        assert!(
            matches!(err, Http1Error::InvalidChunkedFraming(_)),
            "{wire:?}: {err:?}"
        );
    }
    let err = decode(b"1;\x01\r\n").unwrap_err();
    assert!(matches!(err, Http1Error::InvalidChunkedFraming(_)));
    assert!(matches!(
        decode(b"1;\x7f\r\n"),
        Err(Http1Error::InvalidChunkedFraming(_))
    ));
}

#[test]
fn bare_lf_is_rejected_everywhere() {
    for wire in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5;ext\nhello\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"0\r\n\n",
        b"0\r\nA: b\n\r\n",
        b"\n",
    ] {
        assert_eq!(decode(wire).unwrap_err(), Http1Error::BareLf, "{wire:?}");
    }
}

#[test]
fn trailer_errors_and_limits() {
    for wire in [
        &b"0\r\nNo-Colon\r\n\r\n"[..],
        b"0\r\nA : b\r\n\r\n",
        b"0\r\n: b\r\n\r\n",
        b"0\r\nA: b\r\n folded\r\n\r\n",
        b"0\r\nA: b\x00\r\n\r\n",
    ] {
        assert_eq!(
            decode(wire).unwrap_err(),
            Http1Error::InvalidTrailer,
            "{wire:?}"
        );
    }
    let limits = Limits {
        max_trailer_bytes: 10,
        ..Limits::default()
    };
    // "A: 12345\r\n" plus the final CRLF is 12 bytes.
    let wire = b"0\r\nA: 12345\r\n\r\n";
    assert_eq!(
        decode_pieces(&limits, &[wire]),
        Err(Http1Error::TrailersTooLarge)
    );
    let limits = Limits {
        max_trailer_bytes: 12,
        ..Limits::default()
    };
    assert_eq!(
        decode_pieces(&limits, &[wire]),
        Ok((vec![], wire.len(), true))
    );
    assert_eq!(Http1Error::TrailersTooLarge.status(), 431);
}

#[test]
fn chunk_line_limit_bounds_extensions() {
    let limits = Limits {
        max_chunk_line_bytes: 8,
        ..Limits::default()
    };
    assert!(decode_pieces(&limits, &[b"3;abcdef\r\nabc\r\n0\r\n\r\n"]).is_ok());
    assert_eq!(
        decode_pieces(&limits, &[b"3;abcdefg\r\nabc\r\n0\r\n\r\n"]),
        Err(Http1Error::ChunkLineTooLong)
    );
    assert_eq!(
        decode_pieces(&limits, &[b"000000003\r\n"]),
        Err(Http1Error::ChunkLineTooLong)
    );
    let long_ext = [&b"1;"[..], &[b'x'; 5000], b"\r\n"].concat();
    assert_eq!(decode(&long_ext), Err(Http1Error::ChunkLineTooLong));
}

#[test]
fn body_limit_counts_chunk_sizes() {
    let limits = Limits {
        max_body_bytes: Some(8),
        ..Limits::default()
    };
    let fits = b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n";
    assert_eq!(decode_pieces(&limits, &[fits]).unwrap().0, b"helloabc");
    // Fails on the size line, before any byte of the chunk is delivered.
    let mut decoder = ChunkedDecoder::new(&limits);
    let first = decoder.decode(b"5\r\nhello\r\n4\r\nabcd").unwrap();
    assert_eq!(first.data, 3..8);
    assert_eq!(
        decoder.decode(b"\r\n4\r\nabcd"),
        Err(Http1Error::BodyTooLarge)
    );
}

#[test]
fn done_decoder_consumes_nothing() {
    let mut decoder = ChunkedDecoder::new(&Limits::default());
    assert_eq!(
        decoder.decode(LAST_CHUNK).unwrap().consumed,
        LAST_CHUNK.len()
    );
    assert!(decoder.is_done());
    let after = decoder.decode(b"5\r\nhello").unwrap();
    assert_eq!((after.consumed, after.data), (0, 0..0));
}
