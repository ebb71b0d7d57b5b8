//! The whole server connection over an in-memory stream, on any bytes a
//! client could send (then the end of its side): it never panics, never
//! hangs (time is paused and runs ahead when nothing else can), and
//! everything it writes back is a sequence of HTTP/1.1 answers whose
//! count is at most the requests its handler got plus one refusal.

#![no_main]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use mentat_http1::io::{Io, Pair};
use mentat_http1::server::{self, Handler, Limits, Request, RequestBody, Response};
use mentat_http1::BoxError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Reads each body whole and answers its length.
struct Count(Arc<AtomicUsize>);

impl<S: Io> Handler<S> for Count {
    type Body = Body;
    type Upgrade = ();

    fn handle<'a>(
        &'a self,
        _request: Request,
        body: &'a mut RequestBody<S>,
    ) -> impl Future<Output = Response<Body, ()>> + Send + 'a {
        self.0.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut n = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => n += frame.data_ref().map_or(0, Bytes::len),
                    Err(_) => {
                        let status = body.fault().map_or(StatusCode::BAD_GATEWAY, |f| f.status());
                        return Response::text(status, empty());
                    }
                }
            }
            Response::text(
                StatusCode::OK,
                Full::new(Bytes::from(n.to_string()))
                    .map_err(|e| match e {})
                    .boxed(),
            )
        }
    }

    async fn upgrade(&self, (): (), _client: S, _early: BytesMut) {}
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut client, ours) = tokio::io::duplex(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            body_idle: Duration::from_secs(30),
        };
        let served = tokio::spawn(server::serve(
            Pair::split(ours),
            Count(calls.clone()),
            limits,
            CancellationToken::new(),
        ));
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(3600), client.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection never closed");
        served.await.expect("the connection's task panicked");
        let answers = out.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 "),
            "not an answer"
        );
        assert!(
            answers <= 2 * calls.load(Ordering::SeqCst) + 1,
            "more answers than requests"
        );
    });
});
