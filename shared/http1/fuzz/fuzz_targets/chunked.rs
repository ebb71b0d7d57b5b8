//! The chunked decoder on any bytes: it never panics, never waits for
//! more once the bytes at hand break the framing, gives the same body
//! (or the same error) read whole or a few bytes at a time, and agrees
//! with `Decoder::check`.

#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mentat_http1::wire::codec::{Decoder, Framing};
use tokio::io::{AsyncRead, ReadBuf};

/// Gives its bytes `step` at a time, then the end.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.bytes.len()).min(out.remaining());
        out.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Poll::Ready(Ok(()))
    }
}

/// The body, or the error, `raw` decodes to read `step` bytes at a time.
fn decode(raw: &[u8], step: usize) -> Result<Vec<u8>, String> {
    let mut io = Trickle { bytes: raw, step };
    let mut buf = BytesMut::new();
    let mut decoder = Decoder::new(Framing::Chunked);
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = Vec::new();
    loop {
        match decoder.poll_data(&mut io, &mut buf, &mut cx) {
            Poll::Ready(None) => return Ok(body),
            Poll::Ready(Some(Ok(data))) => body.extend_from_slice(&data),
            Poll::Ready(Some(Err(e))) => return Err(e.to_string()),
            Poll::Pending => return Err("pending".into()),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, raw)) = input.split_first() else {
        return;
    };
    let whole = decode(raw, raw.len().max(1));
    let step = usize::from(first % 7) + 1;
    assert_eq!(decode(raw, step), whole, "read {step} bytes at a time");
    let checked = Decoder::new(Framing::Chunked).check(raw);
    match (&whole, &checked) {
        (Ok(_), Ok(true)) => {}
        (Err(e), Err(_)) if !e.contains("before the end") => {}
        // Cut short: incomplete to `check`, the close to the decoder.
        (Err(e), Ok(false)) if e.contains("before the end") => {}
        other => panic!("check and decode disagree: {other:?}"),
    }
});
