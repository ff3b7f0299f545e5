//! `POST /employer/pay-statement` read as it arrives, one statement at a time.
//!
//! Finch's caps allow ten payments of 5,000 statements in one request: an answer of 50,000
//! statements, ~60 MB of JSON, which a worker held to 64 MB cannot read whole (PERFORMANCE.md
//! G12, G14). So the answer is parsed while it is received, and each statement is handed to the
//! pay pass as soon as it is complete; memory is a few chunks and a few dozen statements,
//! whatever the answer's size.
//!
//! The parse is `serde_json`'s own (no hand-written JSON scanner), over a `Read` fed from the
//! HTTP body: it runs on a blocking thread (`spawn_blocking`), a task forwards the body's
//! chunks to it, and bounded channels on both sides carry backpressure from the pay pass, which
//! writes to DynamoDB, back to Finch's connection (TCP flow control): nothing is buffered
//! ahead. Dropping the stream ends both: the parser's next hand-over fails, it drops its reader,
//! the forwarding task's next send fails and the response is dropped.
//!
//! Each item of `responses` is `{payment_id, code, body}`. Statements carry no payment id, so
//! they are handed over tagged with their item's; should an item name its payment after its
//! body (Finch writes it first), that item's statements are held until the id is read — one
//! page at most. An item's end ([`Event::End`]) comes after its statements, with its code, its
//! paging and the number of statements it listed.
//!
//! No error from here quotes the answer: a parse error says where (line, column), never what —
//! the answer is payroll data.

use std::io::Read;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::types::Paging;
use crate::domain::Error;

/// Chunks in flight from the body to the parser, and events from the parser to the pay pass:
/// enough to keep each side busy, little enough to be a few hundred kilobytes at most.
const CHUNKS_AHEAD: usize = 4;
const EVENTS_AHEAD: usize = 64;
/// The operation errors name (the Finch client's name for the endpoint).
const OPERATION: &str = "pay_statement";
/// The parser's reason to stop when the pay pass dropped the stream (never reported).
const GONE: &str = "the reader of the pay statements is gone";

/// What the answer says, in order.
#[derive(Debug)]
pub enum Event {
    /// One statement of the item for `payment_id`, exactly as Finch wrote it.
    Statement { payment_id: Arc<str>, raw: Box<RawValue> },
    /// An item is over: all of its statements were handed over before this.
    End(ItemEnd),
}

/// The end of one item of `responses`.
#[derive(Debug)]
pub struct ItemEnd {
    pub payment_id: String,
    /// The item's own status: 200, or Finch's 202 (still fetching), 404, …
    pub code: u16,
    pub paging: Option<Paging>,
    /// Statements the item listed.
    pub statements: u64,
    /// A 202's or an error's `finch_code`.
    pub finch_code: Option<String>,
}

/// A chunk of the body, or why the body stopped.
type Chunk = Result<Vec<u8>, reqwest::Error>;

/// The statements of one pay-statement answer, as they arrive.
pub struct PayStatementStream {
    events: mpsc::Receiver<Result<Event, Error>>,
}

impl PayStatementStream {
    /// Reads `resp`'s body as it arrives (a task forwards it to the parser).
    pub fn read(mut resp: reqwest::Response) -> Self {
        let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS_AHEAD);
        tokio::spawn(async move {
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => Ok(Vec::from(c)),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Self::parse(rx)
    }

    /// Parses the chunks `chunks` delivers, on a blocking thread.
    fn parse(chunks: mpsc::Receiver<Chunk>) -> Self {
        let (tx, events) = mpsc::channel(EVENTS_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut reader = ChunkReader { chunks, current: Vec::new(), at: 0, failed: None };
            let outcome = {
                let mut de = serde_json::Deserializer::from_reader(&mut reader);
                Answer(&tx).deserialize(&mut de).and_then(|()| de.end())
            };
            let Err(e) = outcome else { return };
            if e.to_string().starts_with(GONE) {
                return;
            }
            let error = match reader.failed.take() {
                Some(t) => Error::FinchTransport {
                    operation: OPERATION,
                    maybe_sent: true,
                    timed_out: t.is_timeout(),
                    source: Box::new(t.without_url()),
                },
                None => Error::internal(format!(
                    "a pay-statement answer Perch cannot read: {:?} at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                )),
            };
            let _ = tx.blocking_send(Err(error));
        });
        Self { events }
    }

    /// The next event; `None` once the answer is read whole (after an error, nothing follows).
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        self.events.recv().await
    }

    /// An answer already in memory (tests, and a body that is small anyway).
    #[cfg(test)]
    fn of_chunks(chunks: Vec<Chunk>) -> Self {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(c).expect("room for every chunk");
        }
        Self::parse(rx)
    }
}

/// The body as a `Read`, a chunk at a time (the parse thread blocks for the next one).
struct ChunkReader {
    chunks: mpsc::Receiver<Chunk>,
    current: Vec<u8>,
    at: usize,
    /// The transport's error, when the body stopped short.
    failed: Option<reqwest::Error>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.blocking_recv() {
                Some(Ok(c)) => (self.current, self.at) = (c, 0),
                Some(Err(e)) => {
                    self.failed = Some(e);
                    return Err(std::io::Error::other("the answer's body stopped short"));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

type Events = mpsc::Sender<Result<Event, Error>>;

fn emit<E: de::Error>(tx: &Events, event: Event) -> Result<(), E> {
    tx.blocking_send(Ok(event)).map_err(|_| E::custom(GONE))
}

/// The answer: `{"responses": [item, …]}`.
struct Answer<'a>(&'a Events);

impl<'de> DeserializeSeed<'de> for Answer<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Answer<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a pay-statement answer")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        while let Some(key) = m.next_key::<String>()? {
            if key == "responses" {
                m.next_value_seed(Items(self.0))?;
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `responses`: the items, each handed over as it is read.
struct Items<'a>(&'a Events);

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of pay-statement items")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<(), S::Error> {
        while s.next_element_seed(Item(self.0))?.is_some() {}
        Ok(())
    }
}

/// One item: `{"payment_id", "code", "body"}` in any order.
struct Item<'a>(&'a Events);

impl<'de> DeserializeSeed<'de> for Item<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Item<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a pay-statement item")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let (mut payment_id, mut code, mut body): (Option<Arc<str>>, Option<u16>, Option<Body>) = (None, None, None);
        while let Some(key) = m.next_key::<String>()? {
            match key.as_str() {
                "payment_id" => payment_id = Some(m.next_value::<String>()?.into()),
                "code" => code = Some(m.next_value()?),
                "body" => body = Some(m.next_value_seed(BodySeed { tx: self.0, payment_id: payment_id.clone() })?),
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        let payment_id = payment_id.ok_or_else(|| de::Error::missing_field("payment_id"))?;
        let code = code.ok_or_else(|| de::Error::missing_field("code"))?;
        let body = body.unwrap_or_default();
        // Statements read before the item named its payment.
        for raw in body.held {
            emit(self.0, Event::Statement { payment_id: payment_id.clone(), raw })?;
        }
        let end = ItemEnd {
            payment_id: payment_id.to_string(),
            code,
            paging: body.paging,
            statements: body.statements,
            finch_code: body.finch_code,
        };
        emit(self.0, Event::End(end))
    }
}

/// What an item's body left once its statements were handed over.
#[derive(Default)]
struct Body {
    paging: Option<Paging>,
    statements: u64,
    finch_code: Option<String>,
    held: Vec<Box<RawValue>>,
}

/// A body: a page (`paging`, `pay_statements`), or a 202's or an error's (`finch_code`, …).
struct BodySeed<'a> {
    tx: &'a Events,
    payment_id: Option<Arc<str>>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Body, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Body;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a pay-statement item's body")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Body, E> {
        Ok(Body::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Body, A::Error> {
        let mut body = Body::default();
        while let Some(key) = m.next_key::<String>()? {
            match key.as_str() {
                "paging" => body.paging = m.next_value()?,
                "finch_code" => body.finch_code = m.next_value()?,
                "pay_statements" => {
                    let seed = Statements { tx: self.tx, payment_id: self.payment_id.as_ref(), body: &mut body };
                    m.next_value_seed(seed)?;
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
}

/// `pay_statements`: each handed over as soon as it is read (held if the payment is unknown).
struct Statements<'a, 'b> {
    tx: &'a Events,
    payment_id: Option<&'a Arc<str>>,
    body: &'b mut Body,
}

impl<'de> DeserializeSeed<'de> for Statements<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Statements<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of pay statements")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<(), S::Error> {
        while let Some(raw) = s.next_element::<Box<RawValue>>()? {
            self.body.statements += 1;
            match self.payment_id {
                Some(id) => emit(self.tx, Event::Statement { payment_id: id.clone(), raw })?,
                None => self.body.held.push(raw),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"responses": [
        {"payment_id": "p1", "code": 200, "body": {"paging": {"count": 3, "offset": 0},
            "pay_statements": [{"individual_id": "a", "gross_pay": {"amount": 1, "currency": "usd"}},
                               {"individual_id": "b"}, {"individual_id": "c", "note": "}]\"{"}]}},
        {"code": 202, "body": {"code": 202, "message": "fetching", "finch_code": "data_sync_in_progress"}, "payment_id": "p2"},
        {"body": {"pay_statements": [{"individual_id": "d"}], "paging": {"offset": 0}}, "code": 200, "payment_id": "p3"},
        {"payment_id": "p4", "code": 404, "body": null}
    ], "extra": [1, 2]}"#;

    /// Every event of an answer cut into `size`-byte chunks, summarised.
    async fn events(answer: &str, size: usize) -> Vec<String> {
        let chunks = answer.as_bytes().chunks(size).map(|c| Ok(c.to_vec())).collect();
        let mut s = PayStatementStream::of_chunks(chunks);
        let mut out = Vec::new();
        while let Some(e) = s.next().await {
            out.push(match e {
                Ok(Event::Statement { payment_id, raw }) => format!("{payment_id}:{}", raw.get()),
                Ok(Event::End(e)) => format!(
                    "end {} {} {} {:?} {:?}",
                    e.payment_id,
                    e.code,
                    e.statements,
                    e.paging.map(|p| (p.count, p.offset)),
                    e.finch_code
                ),
                Err(e) => format!("error {e}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn statements_arrive_one_by_one_tagged_with_their_payment_in_any_chunking() {
        let expected = vec![
            r#"p1:{"individual_id": "a", "gross_pay": {"amount": 1, "currency": "usd"}}"#.to_owned(),
            r#"p1:{"individual_id": "b"}"#.to_owned(),
            r#"p1:{"individual_id": "c", "note": "}]\"{"}"#.to_owned(),
            "end p1 200 3 Some((Some(3), 0)) None".to_owned(),
            r#"end p2 202 0 None Some("data_sync_in_progress")"#.to_owned(),
            // The payment named after the body: its statement is held, then handed over.
            r#"p3:{"individual_id": "d"}"#.to_owned(),
            "end p3 200 1 Some((None, 0)) None".to_owned(),
            "end p4 404 0 None None".to_owned(),
        ];
        for size in [1, 2, 7, 64, 4096] {
            assert_eq!(events(ANSWER, size).await, expected, "chunks of {size} bytes");
        }
    }

    #[tokio::test]
    async fn a_malformed_answer_ends_with_an_error_that_quotes_nothing() {
        let cut = &ANSWER[..ANSWER.find(r#"{"individual_id": "b"}"#).unwrap() + 10];
        let out = events(&format!("{cut}\"secret-ssn-123\" ]"), 16).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with("p1:"));
        assert!(out[1].contains("a pay-statement answer Perch cannot read: Syntax at line"), "{out:?}");
        assert!(!out[1].contains("secret"), "{out:?}");

        let missing = events(r#"{"responses": [{"code": 200, "body": null}]}"#, 8).await;
        assert_eq!(missing.len(), 1);
        assert!(missing[0].starts_with("error"), "{missing:?}");
        assert!(events(r#"{"responses": "#, 8).await[0].starts_with("error"));
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_stops_the_parse() {
        let mut many = String::from(r#"{"responses": [{"payment_id": "p", "code": 200, "body": {"pay_statements": ["#);
        for i in 0..10_000 {
            many.push_str(&format!(r#"{{"individual_id": "{i}"}},"#));
        }
        many.push_str(r#"{}]}}]}"#);
        let chunks: Vec<&[u8]> = many.as_bytes().chunks(1024).collect();
        let (tx, rx) = mpsc::channel(chunks.len());
        for c in &chunks {
            tx.try_send(Ok(c.to_vec())).unwrap();
        }
        let mut s = PayStatementStream::parse(rx);
        assert!(matches!(s.next().await, Some(Ok(Event::Statement { .. }))));
        drop(s);
        // The parser, held by the bounded channel, sees its reader gone and drops the body's.
        tokio::time::timeout(std::time::Duration::from_secs(30), tx.closed())
            .await
            .expect("the parse stopped when its reader went away");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_a_transport_error_after_the_statements_that_came() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = sock.read(&mut request).await.unwrap();
            let part = r#"{"responses": [{"payment_id": "p", "code": 200, "body": {"pay_statements": [{"individual_id": "a"}, {"individual_id": "#;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n";
            sock.write_all(format!("{head}{part}").as_bytes()).await.unwrap();
        });
        let resp = reqwest::Client::new().get(url).send().await.unwrap();
        let mut s = PayStatementStream::read(resp);
        match s.next().await {
            Some(Ok(Event::Statement { payment_id, raw })) => {
                assert_eq!((&*payment_id, raw.get()), ("p", r#"{"individual_id": "a"}"#));
            }
            other => panic!("the first statement: {other:?}"),
        }
        match s.next().await {
            Some(Err(Error::FinchTransport { operation, maybe_sent, .. })) => {
                assert_eq!((operation, maybe_sent), (OPERATION, true))
            }
            other => panic!("a transport error: {other:?}"),
        }
        assert!(s.next().await.is_none(), "nothing after the error");
    }
}
