//! Header fields as ranges into the head's own bytes, and the field-syntax helpers shared by
//! the parsers and the serializer.

use std::{mem::MaybeUninit, ops::Range};

use bytes::{Bytes, BytesMut};

use super::Http1Error;

/// A byte range inside a head. `u32` offsets keep a field at 8 bytes per range; heads are
/// capped at `u32::MAX` bytes by [`Limits`](super::Limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The position of `part` inside `base`. `part` must be a sub-slice of `base` (httparse
    /// hands out such slices); an empty slice, which httparse may take from a static string,
    /// maps to an empty span.
    pub(crate) fn of(base: &[u8], part: &[u8]) -> Span {
        let offset = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        if part.is_empty() || offset > base.len() || base.len() - offset < part.len() {
            return Span::default();
        }
        // Both fit in u32: the parsers never look at more than `u32::MAX` bytes.
        let start = u32::try_from(offset).unwrap_or(0);
        let end = u32::try_from(offset + part.len()).unwrap_or(0);
        Span { start, end }
    }

    pub(crate) fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct Field {
    name: Span,
    value: Span,
}

/// The header fields of a parsed head, in wire order, referring into the head's bytes
/// (shared with the head, never copied). Names compare ASCII-case-insensitively.
#[derive(Clone, Debug)]
pub struct Headers {
    raw: Bytes,
    fields: Vec<Field>,
    /// Which of the [`KNOWN`] names occur (bit `i` for `KNOWN[i]`).
    present: u32,
}

/// Names asked for on most messages (framing, connection handling, what a proxy drops and
/// adds). Parsing notes which of them a head has, so a lookup of one it lacks (most of
/// them, most of the time) is a bit test instead of a scan of every field.
pub(crate) const KNOWN: [&[u8]; 17] = [
    b"connection",
    b"content-length",
    b"transfer-encoding",
    b"upgrade",
    b"expect",
    b"te",
    b"keep-alive",
    b"proxy-connection",
    b"trailer",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"x-forwarded-for",
    b"forwarded",
    b"via",
    b"x-request-id",
    b"host",
    // Written by the proxy on every request: known, so that the head's other fields can
    // go out as they came (see `write_fields`).
    b"x-forwarded-proto",
];

/// A bit per name length (lengths of 63 and more share the top bit): a name whose length
/// is not in a set of names cannot be one of them, whatever its case.
const fn length_bit(len: usize) -> u64 {
    1 << if len < 63 { len } else { 63 }
}

/// [`length_bit`]s of the [`KNOWN`] names.
const KNOWN_LENGTHS: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < KNOWN.len() {
        mask |= length_bit(KNOWN[i].len());
        i += 1;
    }
    mask
};

/// The bit of `name` among the [`KNOWN`] names (any case), 0 if it is none; usable in
/// constants.
pub(crate) const fn known_bit_const(name: &[u8]) -> u32 {
    let mut i = 0;
    while i < KNOWN.len() {
        let k = KNOWN[i];
        if k.len() == name.len() {
            let mut j = 0;
            while j < k.len() && k[j] == name[j].to_ascii_lowercase() {
                j += 1;
            }
            if j == k.len() {
                return 1 << i;
            }
        }
        i += 1;
    }
    0
}

/// The bit of `name` among the [`KNOWN`] names, if it is one (any case).
pub(crate) fn known_bit(name: &[u8]) -> Option<u32> {
    if KNOWN_LENGTHS & length_bit(name.len()) == 0 {
        return None;
    }
    Some(known_bit_const(name)).filter(|&bit| bit != 0)
}

impl Headers {
    /// Ranges of the fields httparse found in `base`, the unsplit head buffer.
    pub(crate) fn spans(base: &[u8], parsed: &[httparse::Header<'_>]) -> Vec<(Span, Span)> {
        parsed
            .iter()
            .map(|h| (Span::of(base, h.name.as_bytes()), Span::of(base, h.value)))
            .collect()
    }

    pub(crate) fn new(raw: Bytes, spans: Vec<(Span, Span)>) -> Headers {
        let fields: Vec<Field> = spans
            .into_iter()
            .map(|(name, value)| Field { name, value })
            .collect();
        let present = fields
            .iter()
            .filter_map(|f| known_bit(&raw[f.name.range()]))
            .fold(0, |p, bit| p | bit);
        Headers {
            raw,
            fields,
            present,
        }
    }

    /// Whether any field has one of the [`KNOWN`] names whose bits are in `bits`.
    pub(crate) fn has_any_known(&self, bits: u32) -> bool {
        self.present & bits != 0
    }

    /// How many fields (a repeated name counts once per line).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every field as `(name, value)`, in wire order, with the name's original case and the
    /// value without surrounding whitespace.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.raw_iter()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap_or_default(), v))
    }

    /// Appends the fields whose names `keep` accepts to `out`, each as a `name: value` line
    /// ending in CRLF. Lines go out as received (the name's case and the whitespace after
    /// the colon kept, trailing whitespace dropped), and a run of adjacent kept lines goes
    /// in one copy: a head passed through mostly whole costs a few copies, not four per
    /// field.
    pub(crate) fn write_kept(&self, mut keep: impl FnMut(&[u8]) -> bool, out: &mut BytesMut) {
        let raw = &self.raw[..];
        // The bytes of the current run of verbatim lines, without its last CRLF.
        let mut run: Option<Range<usize>> = None;
        let flush = |run: &mut Option<Range<usize>>, out: &mut BytesMut| {
            if let Some(r) = run.take() {
                out.extend_from_slice(&raw[r]);
                out.extend_from_slice(b"\r\n");
            }
        };
        for f in &self.fields {
            let name = &raw[f.name.range()];
            if !keep(name) {
                flush(&mut run, out);
                continue;
            }
            let (n, v) = (f.name.range(), f.value.range());
            // Verbatim when the line is `name:` OWS `value` in place (an empty value has no
            // place, see `Span::of`); httparse hands out nothing else, but it is checked.
            let verbatim = !v.is_empty()
                && n.end < v.start
                && raw[n.end] == b':'
                && raw[n.end + 1..v.start]
                    .iter()
                    .all(|&b| b == b' ' || b == b'\t');
            if !verbatim {
                flush(&mut run, out);
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(&raw[v]);
                out.extend_from_slice(b"\r\n");
                continue;
            }
            match &mut run {
                // The previous kept line ends in CRLF right before this one: extend the run.
                Some(r) if raw.get(r.end..n.start) == Some(&b"\r\n"[..]) => r.end = v.end,
                _ => {
                    flush(&mut run, out);
                    run = Some(n.start..v.end);
                }
            }
        }
        flush(&mut run, out);
    }

    pub(crate) fn raw_iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (&self.raw[f.name.range()], &self.raw[f.value.range()]))
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// The value of the first field called `name`, as a zero-copy slice of the head.
    pub fn get_shared(&self, name: &str) -> Option<Bytes> {
        self.candidates(name.as_bytes())
            .iter()
            .find(|f| self.raw[f.name.range()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| self.raw.slice(f.value.range()))
    }

    /// The values of every field called `name`, in wire order.
    pub fn get_all<'h, 'n>(
        &'h self,
        name: &'n str,
    ) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
        self.candidates(name.as_bytes())
            .iter()
            .filter(move |f| self.raw[f.name.range()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| &self.raw[f.value.range()])
    }

    /// The fields that may be called `name`: none when it is a [`KNOWN`] name the head
    /// lacks, else all of them.
    fn candidates(&self, name: &[u8]) -> &[Field] {
        match known_bit(name) {
            Some(bit) if self.present & bit == 0 => &[],
            _ => &self.fields,
        }
    }

    /// Whether a field called `name` is present (even with an empty value).
    pub fn contains(&self, name: &str) -> bool {
        self.get_all(name).next().is_some()
    }

    /// How many fields are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether `token` is a member of the comma-separated lists of the fields called `name`
    /// (e.g. `close` in `Connection: keep-alive, Close`), case-insensitively.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(list_elements)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// Header slots handed to httparse: on the stack up to this many, on the heap beyond.
const STACK_SLOTS: usize = 128;

/// Runs `f` with `max` uninitialised httparse header slots (httparse writes only the ones
/// it fills; initialising all 128 would cost two 4 KiB stores per request).
pub(crate) fn with_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_SLOTS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_SLOTS];
        f(&mut slots[..max])
    } else {
        let mut slots = Vec::with_capacity(max);
        f(&mut slots.spare_capacity_mut()[..max])
    }
}

/// Maps an httparse error to ours.
pub(crate) fn parse_error(e: httparse::Error) -> Http1Error {
    match e {
        httparse::Error::TooManyHeaders => Http1Error::TooManyHeaders,
        httparse::Error::Version => Http1Error::UnsupportedVersion,
        other => Http1Error::MalformedHead(other),
    }
}

/// The rules every head shares, around a start-line parser: `parse` sees at most
/// `max_head_bytes` of `buf` and returns the head's length and its parts (`None` while the
/// head is incomplete). A head still incomplete at the limit is too large; bare-LF line
/// endings are rejected; a complete head's bytes are split off `buf` (untouched otherwise).
pub(crate) fn split_head<T>(
    buf: &mut BytesMut,
    max_head_bytes: usize,
    parse: impl FnOnce(&[u8]) -> Result<Option<(usize, T)>, Http1Error>,
) -> Result<Option<(Bytes, T)>, Http1Error> {
    let max_head = max_head_bytes.min(u32::MAX as usize);
    let Some((len, parts)) = parse(&buf[..buf.len().min(max_head)])? else {
        return if buf.len() >= max_head {
            Err(Http1Error::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    reject_bare_lf(&buf[..len])?;
    Ok(Some((buf.split_to(len).freeze(), parts)))
}

/// Rejects an LF not preceded by CR. httparse accepts bare LF as a line end (RFC 9112 §2.2
/// allows it); a proxy must not, or it and the next parser could disagree on the boundary.
pub(crate) fn reject_bare_lf(head: &[u8]) -> Result<(), Http1Error> {
    // Visits only the line ends (a few per head), found by a vectorised search.
    for i in memchr::memchr_iter(b'\n', head) {
        if i == 0 || head[i - 1] != b'\r' {
            return Err(Http1Error::BareLf);
        }
    }
    Ok(())
}

/// The non-empty elements of a comma-separated list, without surrounding whitespace.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// `value` without leading and trailing SP and HTAB.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// `tchar` (RFC 9110 §5.6.2) by byte value.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// Whether `b` is a `tchar` (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Whether `s` is a non-empty `token`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether `b` may appear in a field value (HTAB, SP, VCHAR, obs-text).
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}
