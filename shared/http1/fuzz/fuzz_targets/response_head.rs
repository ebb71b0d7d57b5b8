//! The response-head parser on any bytes (the first byte says whether the
//! answer is to a HEAD): it never panics, and a head it takes is framed
//! one way, with no length passed on beside a transfer coding, and taken
//! the same from any prefix fed first.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mentat_http1::wire::codec::Framing;
use mentat_http1::wire::response;

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let head_request = first & 1 == 1;
    let mut whole = BytesMut::from(data);
    let Ok(Some(answer)) = response::parse(&mut whole, head_request) else {
        return;
    };
    let used = data.len() - whole.len();
    if answer.fields.is_coded() {
        assert!(!answer.fields.has_length(), "a length beside a coding");
    }
    if head_request {
        assert_eq!(
            answer.framing,
            Framing::Empty,
            "an answer to HEAD has no body"
        );
    }
    if answer.framing == Framing::UntilClose {
        assert!(
            !answer.keep_alive,
            "a body to the close keeps the connection"
        );
    }
    let cut = usize::from(first >> 1) % used.max(1);
    let mut buf = BytesMut::from(&data[..cut]);
    match response::parse(&mut buf, head_request) {
        Ok(None) => {}
        other => panic!(
            "a prefix of a valid head gave {:?}",
            other.map(|h| h.is_some())
        ),
    }
    buf.extend_from_slice(&data[cut..]);
    let again = response::parse(&mut buf, head_request)
        .expect("the whole head again")
        .expect("complete again");
    assert_eq!(buf.len(), whole.len());
    assert_eq!(
        (again.status, again.framing, again.keep_alive),
        (answer.status, answer.framing, answer.keep_alive)
    );
});
