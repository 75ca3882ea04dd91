//! Streaming responses: SSE (`data: <json>\n\n`) and NDJSON (`<json>\n`),
//! driven by a pure [`EventEncoder`] over a stream of engine events.
//!
//! The response body owns the event source (a [`RequestStream`] or several):
//! when the client disconnects, hyper drops the body, which drops the source,
//! which aborts the request in the engine.
//!
//! [`RequestStream`]: kiln_engine_api::RequestStream

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde_json::Value;

/// One item a streaming encoder emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON payload: SSE `data: <json>\n\n`, NDJSON `<json>\n`.
    Json(Value),
    /// A named event: SSE `event: <name>\ndata: <json>\n\n`; NDJSON writes
    /// the payload alone.
    Event {
        /// The SSE event name (`response.created`).
        name: &'static str,
        /// The payload.
        data: Value,
    },
    /// SSE's `data: [DONE]\n\n` terminator (NDJSON writes nothing).
    Done,
}

/// Whether a stream goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading events.
    Continue,
    /// Stop now (the stream failed): [`EventEncoder::end`] runs next.
    Stop,
}

/// Turns engine events into frames; pure and synchronous so that every
/// dialect's stream shape is unit-testable without a server.
pub trait EventEncoder: Send + 'static {
    /// What the source yields (`TokenEvent`, or events tagged by prompt).
    type Event: Send + 'static;

    /// Frames sent before the first event (e.g. OpenAI's role chunks).
    fn start(&mut self, out: &mut Vec<Frame>) {
        let _ = out;
    }

    /// Frames for one event.
    fn event(&mut self, event: Self::Event, out: &mut Vec<Frame>) -> Flow;

    /// Frames after the last event or a [`Flow::Stop`] (usage chunk, `[DONE]`).
    fn end(&mut self, out: &mut Vec<Frame>);
}

/// The wire framing of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events, `text/event-stream`.
    Sse,
    /// Newline-delimited JSON, `application/x-ndjson`, no blank lines.
    Ndjson,
}

impl Framing {
    /// The `Content-Type` of the response.
    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Sse => "text/event-stream",
            Framing::Ndjson => "application/x-ndjson",
        }
    }

    /// Appends one frame's bytes to `buf`.
    pub fn write(self, frame: &Frame, buf: &mut Vec<u8>) {
        match (self, frame) {
            (Framing::Sse, Frame::Json(v)) => {
                buf.extend_from_slice(b"data: ");
                write_json(v, buf);
                buf.extend_from_slice(b"\n\n");
            }
            (Framing::Sse, Frame::Event { name, data }) => {
                buf.extend_from_slice(b"event: ");
                buf.extend_from_slice(name.as_bytes());
                buf.extend_from_slice(b"\ndata: ");
                write_json(data, buf);
                buf.extend_from_slice(b"\n\n");
            }
            (Framing::Sse, Frame::Done) => buf.extend_from_slice(b"data: [DONE]\n\n"),
            (Framing::Ndjson, Frame::Json(v) | Frame::Event { data: v, .. }) => {
                write_json(v, buf);
                buf.push(b'\n');
            }
            (Framing::Ndjson, Frame::Done) => {}
        }
    }

    /// All frames as one chunk.
    pub fn render(self, frames: &[Frame]) -> Bytes {
        let mut buf = Vec::new();
        for f in frames {
            self.write(f, &mut buf);
        }
        Bytes::from(buf)
    }
}

fn write_json(v: &Value, buf: &mut Vec<u8>) {
    // Serializing a `Value` cannot fail; compact JSON never contains a raw newline.
    let _ = serde_json::to_writer(&mut *buf, v);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Running,
    Finished,
}

struct Driver<S, E> {
    source: S,
    encoder: E,
    phase: Phase,
}

/// The body chunks of a stream: one chunk per event (so each is flushed on its own).
pub fn encode_stream<S, E>(
    source: S,
    encoder: E,
    framing: Framing,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static
where
    S: Stream<Item = E::Event> + Unpin + Send + 'static,
    E: EventEncoder,
{
    let driver = Driver {
        source,
        encoder,
        phase: Phase::Start,
    };
    futures::stream::unfold(driver, move |mut d| async move {
        let mut frames = Vec::new();
        if d.phase == Phase::Start {
            d.encoder.start(&mut frames);
            d.phase = Phase::Running;
        }
        while frames.is_empty() && d.phase == Phase::Running {
            match d.source.next().await {
                Some(event) => {
                    if d.encoder.event(event, &mut frames) == Flow::Stop {
                        d.encoder.end(&mut frames);
                        d.phase = Phase::Finished;
                    }
                }
                None => {
                    d.encoder.end(&mut frames);
                    d.phase = Phase::Finished;
                }
            }
        }
        if frames.is_empty() {
            return None;
        }
        Some((Ok(framing.render(&frames)), d))
    })
}

/// A streaming response (status 200) with `X-Accel-Buffering: no` and
/// `Cache-Control: no-cache`.
pub fn stream_response<S, E>(source: S, encoder: E, framing: Framing) -> Response
where
    S: Stream<Item = E::Event> + Unpin + Send + 'static,
    E: EventEncoder,
{
    let mut response = Response::new(Body::from_stream(encode_stream(source, encoder, framing)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Runs an encoder over a finished list of events (tests and golden files).
pub fn encode_all<E: EventEncoder>(
    mut encoder: E,
    events: impl IntoIterator<Item = E::Event>,
) -> Vec<Frame> {
    let mut out = Vec::new();
    encoder.start(&mut out);
    for e in events {
        if encoder.event(e, &mut out) == Flow::Stop {
            break;
        }
    }
    encoder.end(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Echo;
    impl EventEncoder for Echo {
        type Event = i64;
        fn start(&mut self, out: &mut Vec<Frame>) {
            out.push(Frame::Json(json!({"start": true})));
        }
        fn event(&mut self, e: i64, out: &mut Vec<Frame>) -> Flow {
            if e < 0 {
                out.push(Frame::Json(json!({"error": e})));
                return Flow::Stop;
            }
            if e > 0 {
                out.push(Frame::Json(json!({"n": e})));
            }
            Flow::Continue
        }
        fn end(&mut self, out: &mut Vec<Frame>) {
            out.push(Frame::Done);
        }
    }

    async fn body(events: Vec<i64>, framing: Framing) -> Vec<Bytes> {
        encode_stream(futures::stream::iter(events), Echo, framing)
            .map(|c| c.unwrap())
            .collect()
            .await
    }

    #[tokio::test]
    async fn sse_framing_is_exact() {
        let chunks = body(vec![1, 0, 2], Framing::Sse).await;
        let text: Vec<&[u8]> = chunks.iter().map(|c| c.as_ref()).collect();
        assert_eq!(
            text,
            vec![
                &b"data: {\"start\":true}\n\n"[..],
                b"data: {\"n\":1}\n\n",
                b"data: {\"n\":2}\n\n",
                b"data: [DONE]\n\n"
            ]
        );
    }

    #[test]
    fn named_events_carry_their_name_in_sse_only() {
        let frame = Frame::Event {
            name: "response.created",
            data: json!({"a": 1}),
        };
        let sse = Framing::Sse.render(std::slice::from_ref(&frame));
        assert_eq!(&sse[..], b"event: response.created\ndata: {\"a\":1}\n\n");
        assert_eq!(&Framing::Ndjson.render(&[frame])[..], b"{\"a\":1}\n");
    }

    #[tokio::test]
    async fn ndjson_has_no_blank_lines_and_no_done() {
        let chunks = body(vec![1, 2], Framing::Ndjson).await;
        let all: Vec<u8> = chunks.concat();
        assert_eq!(all, b"{\"start\":true}\n{\"n\":1}\n{\"n\":2}\n");
    }

    #[tokio::test]
    async fn stop_ends_the_stream_and_drops_the_rest() {
        let chunks = body(vec![1, -1, 5], Framing::Sse).await;
        let all = String::from_utf8(chunks.concat()).unwrap();
        assert!(
            all.ends_with("data: {\"error\":-1}\n\ndata: [DONE]\n\n"),
            "{all}"
        );
        assert!(!all.contains("\"n\":5"));
    }

    #[test]
    fn encode_all_matches_the_driver() {
        let frames = encode_all(Echo, vec![3]);
        assert_eq!(
            frames,
            vec![
                Frame::Json(json!({"start": true})),
                Frame::Json(json!({"n": 3})),
                Frame::Done
            ]
        );
    }
}
