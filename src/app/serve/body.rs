//! Request and response body wrappers the listeners put around every request: a minimum rate for
//! request bodies, and a guard that lives as long as a response is being sent.

use axum::body::{Bytes, HttpBody};
use hyper::body::{Buf, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a body cut off for its rate yields (handlers answer it as an unreadable body).
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {0} bytes per second")]
pub struct TooSlow(pub u64);

/// A request body that must average `min_rate` bytes per second once `grace` has passed, or it
/// yields `TooSlow`: a client trickling its body cannot hold a request (and whatever the handler
/// reserved for it) open for long. The clock starts when the body is first read, so time the
/// server itself spends before reading (admission, authentication) is not held against the client.
pub struct MinRate<B> {
    inner: B,
    min_rate: u64,
    grace: Duration,
    started: Option<Instant>,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    on_cutoff: Option<Box<dyn FnOnce() + Send>>,
    cut: bool,
}

impl<B> MinRate<B> {
    /// `min_rate` 0 lets every body through at any rate.
    pub fn new(inner: B, min_rate: u64, grace: Duration) -> MinRate<B> {
        MinRate {
            inner,
            min_rate,
            grace,
            started: None,
            received: 0,
            timer: None,
            on_cutoff: None,
            cut: false,
        }
    }

    /// Called once, when the body is cut off (to count it).
    pub fn on_cutoff(mut self, f: impl FnOnce() + Send + 'static) -> MinRate<B> {
        self.on_cutoff = Some(Box::new(f));
        self
    }

    /// The moment from which the bytes received so far are below the rate: never before the grace
    /// period ends, and later the more has arrived.
    fn deadline(&self, started: Instant) -> Instant {
        let earned = Duration::from_millis(self.received.saturating_mul(1000) / self.min_rate);
        started + self.grace.max(earned)
    }

    fn cut_off(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.cut {
            self.cut = true;
            self.timer = None;
            if let Some(f) = self.on_cutoff.take() {
                f();
            }
        }
        Poll::Ready(Some(Err(Box::new(TooSlow(self.min_rate)))))
    }
}

impl<B> HttpBody for MinRate<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.cut {
            return this.cut_off();
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.remaining() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.min_rate == 0 => Poll::Pending,
            Poll::Pending => {
                // Waiting for the client: wake when what it has sent stops being enough.
                let deadline = this.deadline(started);
                if Instant::now() >= deadline {
                    return this.cut_off();
                }
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                this.cut_off()
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.cut && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds `guard` until it has been sent (or the connection dropped it), so
/// a connection streaming a long response counts as busy, not idle.
pub struct Guarded<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Guarded<B, G> {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B, G> HttpBody for Guarded<B, G>
where
    B: HttpBody + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    type Chunks = StreamBody<
        futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>,
    >;

    /// A body fed by the test, chunk by chunk.
    fn fed() -> (mpsc::UnboundedSender<&'static [u8]>, Chunks) {
        use futures::StreamExt as _;
        let (tx, rx) = mpsc::unbounded_channel::<&'static [u8]>();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok(Frame::data(Bytes::from_static(chunk))), rx))
        })
        .boxed();
        (tx, StreamBody::new(stream))
    }

    #[tokio::test]
    async fn a_trickled_body_is_cut_off_after_the_grace_period() {
        let (tx, inner) = fed();
        let cuts = Arc::new(AtomicUsize::new(0));
        let counted = cuts.clone();
        let grace = Duration::from_millis(300);
        let mut body = MinRate::new(inner, 1024, grace).on_cutoff(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let start = Instant::now();
        let feeder = tokio::spawn(async move {
            // Ten bytes every 50 ms, 200 bytes a second: far below 1024.
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                if tx.send(b"0123456789").is_err() {
                    return;
                }
            }
        });
        let mut got = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("the body ended instead of being cut off"),
            }
        };
        assert!(err.is::<TooSlow>(), "{err}");
        let elapsed = start.elapsed();
        assert!(
            elapsed >= grace && elapsed < grace + Duration::from_secs(2),
            "{elapsed:?}"
        );
        assert!(got > 0 && got < 1024, "{got}");
        assert_eq!(cuts.load(Ordering::SeqCst), 1);
        // Read again: still an error, and counted once.
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(cuts.load(Ordering::SeqCst), 1);
        feeder.abort();
    }

    #[tokio::test]
    async fn a_silent_body_is_cut_off_without_any_byte_arriving() {
        let (_tx, inner) = fed();
        let grace = Duration::from_millis(200);
        let mut body = MinRate::new(inner, 1024, grace);
        let start = Instant::now();
        assert!(body.frame().await.unwrap().is_err());
        assert!(start.elapsed() >= grace, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_body_at_the_rate_passes_however_long_it_takes() {
        let (tx, inner) = fed();
        let grace = Duration::from_millis(100);
        let body = MinRate::new(inner, 1024, grace);
        tokio::spawn(async move {
            // 2 KiB every 100 ms (20 KiB/s) for ten times the grace period, then the end.
            static CHUNK: [u8; 2048] = [7; 2048];
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..10 {
                tick.tick().await;
                tx.send(&CHUNK).unwrap();
            }
        });
        let start = Instant::now();
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 10 * 2048);
        assert!(start.elapsed() >= 9 * grace);
    }

    #[tokio::test]
    async fn the_clock_starts_when_the_body_is_first_read() {
        let (tx, inner) = fed();
        let grace = Duration::from_millis(100);
        let body = MinRate::new(inner, 1024, grace);
        // The server is busy elsewhere for five grace periods before it reads (the client is
        // held back meanwhile, as flow control would hold it) ...
        tokio::time::sleep(grace * 5).await;
        // ... then the client sends at a fine rate, its first bytes half a grace period later.
        tokio::spawn(async move {
            static CHUNK: [u8; 2048] = [7; 2048];
            tokio::time::sleep(grace / 2).await;
            let mut tick = tokio::time::interval(grace);
            for _ in 0..3 {
                tick.tick().await;
                tx.send(&CHUNK).unwrap();
            }
        });
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 3 * 2048);
    }

    #[tokio::test]
    async fn rate_zero_never_cuts() {
        let (tx, inner) = fed();
        let grace = Duration::from_millis(50);
        let mut body = MinRate::new(inner, 0, grace);
        tokio::spawn(async move {
            tokio::time::sleep(grace * 6).await;
            tx.send(b"late").unwrap();
        });
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(&frame.into_data().unwrap()[..], b"late");
    }
}
