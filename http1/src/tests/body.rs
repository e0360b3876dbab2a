use bytes::BytesMut;

use crate::{BodyDecoder, Decoded, Framing, Http1Error, LengthDecoder, Limits};

#[test]
fn length_decoder_counts_down_and_leaves_the_rest() {
    let mut decoder = LengthDecoder::new(5);
    assert_eq!(
        decoder.decode(b"he"),
        Decoded {
            consumed: 2,
            data: 0..2
        }
    );
    assert_eq!(decoder.remaining(), 3);
    assert!(!decoder.is_done());
    assert_eq!(
        decoder.decode(b"lloGET"),
        Decoded {
            consumed: 3,
            data: 0..3
        }
    );
    assert!(decoder.is_done());
    assert_eq!(
        decoder.decode(b"GET"),
        Decoded {
            consumed: 0,
            data: 0..0
        }
    );
}

#[test]
fn decoder_per_framing() {
    let limits = Limits::default();
    let mut empty = BodyDecoder::new(Framing::None, &limits);
    assert!(empty.is_done());
    assert_eq!(empty.decode(b"GET").unwrap().consumed, 0);
    assert!(empty.finish().is_ok());

    let zero = BodyDecoder::new(Framing::ContentLength(0), &limits);
    assert!(zero.is_done());

    let mut until_close = BodyDecoder::new(Framing::CloseDelimited, &limits);
    assert_eq!(
        until_close.decode(b"abc").unwrap(),
        Decoded {
            consumed: 3,
            data: 0..3
        }
    );
    assert!(!until_close.is_done());
    assert!(
        until_close.finish().is_ok(),
        "closing ends a close-delimited body"
    );

    let mut chunked = BodyDecoder::new(Framing::Chunked, &limits);
    assert!(matches!(chunked, BodyDecoder::Chunked(_)));
    assert_eq!(chunked.decode(b"3\r\nabc").unwrap().data, 3..6);
    assert_eq!(chunked.finish(), Err(Http1Error::IncompleteBody));
    chunked.decode(b"\r\n0\r\n\r\n").unwrap();
    assert!(chunked.is_done() && chunked.finish().is_ok());
}

#[test]
fn eof_before_content_length_is_incomplete() {
    let mut decoder = BodyDecoder::new(Framing::ContentLength(4), &Limits::default());
    decoder.decode(b"abc").unwrap();
    assert_eq!(decoder.finish(), Err(Http1Error::IncompleteBody));
    decoder.decode(b"d").unwrap();
    assert!(decoder.finish().is_ok());
    assert_eq!(Http1Error::IncompleteBody.status(), 400);
}

#[test]
fn next_chunk_splits_the_buffer_without_copying() {
    let wire = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    let mut buf = BytesMut::from(&wire[..]);
    let base = buf.as_ptr() as usize;
    let mut decoder = BodyDecoder::new(Framing::Chunked, &Limits::default());
    let first = decoder.next_chunk(&mut buf).unwrap().unwrap();
    assert_eq!(&first[..], b"hello");
    assert_eq!(
        first.as_ptr() as usize - base,
        3,
        "a slice of the read buffer"
    );
    let second = decoder.next_chunk(&mut buf).unwrap().unwrap();
    assert_eq!(&second[..], b" world");
    assert_eq!(second.as_ptr() as usize - base, 13);
    assert_eq!(decoder.next_chunk(&mut buf).unwrap(), None);
    assert!(decoder.is_done());
    assert_eq!(
        &buf[..],
        b"GET / HTTP/1.1\r\n",
        "the next message stays in the buffer"
    );
    assert_eq!(decoder.next_chunk(&mut buf).unwrap(), None);
}

#[test]
fn next_chunk_across_reads() {
    let mut decoder = BodyDecoder::new(Framing::Chunked, &Limits::default());
    let mut buf = BytesMut::from(&b"5\r\nhel"[..]);
    assert_eq!(decoder.next_chunk(&mut buf).unwrap().unwrap(), &b"hel"[..]);
    assert!(buf.is_empty());
    assert_eq!(decoder.next_chunk(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"lo\r");
    assert_eq!(decoder.next_chunk(&mut buf).unwrap().unwrap(), &b"lo"[..]);
    assert_eq!(
        decoder.next_chunk(&mut buf).unwrap(),
        None,
        "only framing left"
    );
    assert!(buf.is_empty() && !decoder.is_done());
    buf.extend_from_slice(b"\nzz");
    assert_eq!(
        decoder.next_chunk(&mut buf),
        Err(Http1Error::InvalidChunkSize)
    );

    let mut length = BodyDecoder::new(Framing::ContentLength(3), &Limits::default());
    let mut buf = BytesMut::from(&b"abcdef"[..]);
    assert_eq!(length.next_chunk(&mut buf).unwrap().unwrap(), &b"abc"[..]);
    assert_eq!(&buf[..], b"def");
    assert_eq!(length.next_chunk(&mut buf).unwrap(), None);
}
