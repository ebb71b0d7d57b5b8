//! The request-head parser on any bytes: it never panics, and a head it
//! takes whole is taken the same from any prefix fed first (a prefix is
//! either incomplete or the same head), holds no bare LF, and is framed
//! one way only.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mentat_http1::wire::codec::Framing;
use mentat_http1::wire::request;

fuzz_target!(|data: &[u8]| {
    let mut whole = BytesMut::from(data);
    let parsed = request::parse(&mut whole);
    let Ok(Some(head)) = parsed else {
        return;
    };
    let used = data.len() - whole.len();
    let text = &data[..used];
    assert!(
        !text
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || text[i - 1] != b'\r')),
        "a head with a bare LF was taken"
    );
    let lengths = head.fields.get_all(b"content-length").count();
    let codings = head.fields.get_all(b"transfer-encoding").count();
    match head.framing {
        Framing::Chunked => assert!(lengths == 0 && codings == 1, "chunked and a length"),
        Framing::Length(_) => assert!(codings == 0, "a length and a coding"),
        Framing::Empty => assert!(codings == 0, "a coding and no body"),
        Framing::UntilClose => panic!("a request runs until the close"),
    }
    assert!(head.fields.get_all(b"host").count() <= 1, "two hosts");
    // The same head from a prefix first, then the rest.
    let cut = usize::from(data[0]) % used.max(1);
    let mut buf = BytesMut::from(&data[..cut]);
    match request::parse(&mut buf) {
        Ok(None) => {}
        other => panic!(
            "a prefix of a valid head gave {:?}",
            other.map(|h| h.is_some())
        ),
    }
    buf.extend_from_slice(&data[cut..]);
    let again = request::parse(&mut buf)
        .expect("the whole head again")
        .expect("complete again");
    assert_eq!(buf.len(), whole.len(), "the same bytes used");
    assert_eq!(again.parts.method, head.parts.method);
    assert_eq!(again.parts.uri, head.parts.uri);
    assert_eq!(again.framing, head.framing);
    assert!(again.fields.iter().eq(head.fields.iter()));
});
