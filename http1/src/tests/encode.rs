use bytes::BytesMut;

use super::chunked::decode;
use crate::{LAST_CHUNK, encode_chunk, encode_chunk_header};

#[test]
fn encoder_writes_hex_sizes() {
    let mut out = BytesMut::new();
    encode_chunk(b"hello", &mut out);
    assert_eq!(&out[..], b"5\r\nhello\r\n");
    for (len, header) in [
        (1, "1"),
        (26, "1a"),
        (4096, "1000"),
        (usize::MAX, "ffffffffffffffff"),
    ] {
        let mut out = BytesMut::new();
        encode_chunk_header(len, &mut out);
        assert_eq!(out, format!("{header}\r\n").as_bytes());
    }
    let mut out = BytesMut::new();
    encode_chunk(b"", &mut out);
    encode_chunk_header(0, &mut out);
    assert!(out.is_empty(), "an empty chunk would end the body");
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
}

#[test]
fn encoded_chunks_decode_back() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    for size in [1, 7, 16, 255, 256, 4095, 5000] {
        let mut wire = BytesMut::new();
        for piece in payload.chunks(size) {
            encode_chunk(piece, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        assert_eq!(
            decode(&wire),
            Ok((payload.clone(), wire.len(), true)),
            "{size}"
        );
    }
}
