//! W3C trace context (`traceparent`) carried in Kafka headers, so one order's
//! path through the hub is one trace: each hop is a child span of the event
//! that caused it.

use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const HEADER: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex into `out` (twice as long as `bytes`). By hand: through
/// `fmt` this was a tenth of the hub's CPU in `orelink bench e2e`, where every
/// event hop writes a `traceparent`.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[(b >> 4) as usize];
        o[1] = DIGITS[(b & 0xf) as usize];
    }
}

/// An id shown as lowercase hex.
#[derive(Debug, Clone, Copy)]
pub struct HexId<const N: usize>([u8; N]);

impl<const N: usize> std::fmt::Display for HexId<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 64];
        let out = &mut buf[..N * 2];
        hex_into(&self.0, out);
        f.write_str(std::str::from_utf8(out).expect("hex digits are ASCII"))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `traceparent`'s length in version 00: `00-` 32 `-` 16 `-` 2.
const HEADER_LEN: usize = 55;

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// A new trace, for events that arrive without one.
    pub fn root() -> Self {
        let mut trace_id: [u8; 16] = rand::random();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext { trace_id, span_id: Self::new_span_id(), sampled: true }
    }

    fn new_span_id() -> [u8; 8] {
        let id: [u8; 8] = rand::random();
        if id == [0; 8] { [0, 0, 0, 0, 0, 0, 0, 1] } else { id }
    }

    /// A span inside the same trace whose parent is `self`.
    pub fn child(&self) -> Self {
        TraceContext { trace_id: self.trace_id, span_id: Self::new_span_id(), sampled: self.sampled }
    }

    /// Parses version 00 of `traceparent`; all-zero ids are invalid per the spec.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id = unhex::<16>(trace)?;
        let span_id = unhex::<8>(span)?;
        let flags = unhex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id, sampled: flags[0] & 1 == 1 })
    }

    pub fn header_value(&self) -> String {
        String::from_utf8(self.header_bytes().to_vec()).expect("traceparent is ASCII")
    }

    fn header_bytes(&self) -> [u8; HEADER_LEN] {
        let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut v[3..35]);
        hex_into(&self.span_id, &mut v[36..52]);
        v[54] = b'0' + self.sampled as u8;
        v
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace id as hex for a log field, written where it is formatted
    /// (no string of its own per event).
    pub fn trace_id_display(&self) -> HexId<16> {
        HexId(self.trace_id)
    }

    /// The span id as hex for a log field, like [`Self::trace_id_display`].
    pub fn span_id_display(&self) -> HexId<8> {
        HexId(self.span_id)
    }

    pub fn from_headers<H: Headers + ?Sized>(headers: Option<&H>) -> Option<Self> {
        let h = headers?;
        (0..h.count())
            .map(|i| h.get(i))
            .find(|h| h.key == HEADER)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(Self::parse)
    }

    pub fn to_headers(&self) -> OwnedHeaders {
        OwnedHeaders::new_with_capacity(1).insert(Header { key: HEADER, value: Some(&self.header_bytes()[..]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_spec_example() {
        let t = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(t.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(t.span_id_hex(), "b7ad6b7169203331");
        assert!(t.sampled);
        assert!(TraceContext::parse("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(TraceContext::parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none());
        assert!(TraceContext::parse("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01").is_none());
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent = TraceContext::root();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
    }

    proptest! {
        #[test]
        fn header_round_trips(t in any::<[u8; 16]>(), s in any::<[u8; 8]>(), sampled in any::<bool>()) {
            prop_assume!(t != [0; 16] && s != [0; 8]);
            let ctx = TraceContext { trace_id: t, span_id: s, sampled };
            prop_assert_eq!(TraceContext::parse(&ctx.header_value()), Some(ctx));
        }

        #[test]
        fn header_value_is_the_spec_format(t in any::<[u8; 16]>(), s in any::<[u8; 8]>(), sampled in any::<bool>()) {
            let ctx = TraceContext { trace_id: t, span_id: s, sampled };
            let spelled = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
            let expected = format!("00-{}-{}-{:02x}", spelled(&t), spelled(&s), sampled as u8);
            prop_assert_eq!(ctx.header_value(), expected.clone());
            prop_assert_eq!(ctx.trace_id_hex(), spelled(&t));
            let headers = ctx.to_headers();
            prop_assert_eq!(headers.get(0).value, Some(expected.as_bytes()));
        }

        #[test]
        fn parse_is_total(s in "\\PC{0,80}") {
            let _ = TraceContext::parse(&s);
        }
    }
}
