//! Server-sent events framing (the subset engines use): `data:` lines (several join with `\n`),
//! `event:` names, comments (`:`) ignored, a blank line ends an event. An event still open at
//! the end of the input is discarded, as the SSE spec says.

use bytes::Bytes;

use super::{LineDecoder, LineTooLong};

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental SSE decoder.
#[derive(Debug)]
pub struct SseDecoder {
    lines: LineDecoder,
    event: Option<String>,
    data: Option<String>,
    /// An event's joined `data` may not grow beyond this either (many short lines).
    max_data: usize,
}

impl SseDecoder {
    /// A decoder refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            lines: LineDecoder::keeping_blank(max_line),
            event: None,
            data: None,
            max_data: max_line,
        }
    }

    /// Feeds `chunk` and returns every event it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let lines = self.lines.push(chunk)?;
        let mut events = Vec::new();
        for line in lines {
            if let Some(event) = self.line(line)? {
                events.push(event);
            }
        }
        Ok(events)
    }

    fn line(&mut self, line: Bytes) -> Result<Option<SseEvent>, LineTooLong> {
        if line.is_empty() {
            let Some(data) = self.data.take() else {
                return Ok(None);
            };
            return Ok(Some(SseEvent {
                event: self.event.take(),
                data,
            }));
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.split_once(':') {
            Some(("", _comment)) => return Ok(None),
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
                if data.len() > self.max_data {
                    return Err(LineTooLong(self.max_data));
                }
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        let mut start = 0;
        for cut in cuts.iter().copied().chain([input.len()]) {
            let cut = cut.clamp(start, input.len());
            events.extend(decoder.push(&input[start..cut]).unwrap());
            start = cut;
        }
        events
    }

    fn data(text: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: text.to_owned(),
        }
    }

    #[test]
    fn an_event_of_many_short_data_lines_is_bounded_too() {
        let mut decoder = SseDecoder::new(64);
        let many: String = "data: 0123456789\n".repeat(10);
        assert!(decoder.push(many.as_bytes()).is_err());
    }

    #[test]
    fn data_lines_comments_crlf_and_multiline_data() {
        let input = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\nevent: error\ndata: line1\ndata: line2\n\ndata:[DONE]\n\ndata: cut";
        let events = decode(input, &[]);
        assert_eq!(
            events,
            vec![
                data("{\"a\":1}"),
                SseEvent {
                    event: Some("error".into()),
                    data: "line1\nline2".into()
                },
                data("[DONE]"),
            ]
        );
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_events(
            payloads in prop::collection::vec("[a-z0-9{}\":, ]{0,40}", 0..15),
            mut cuts in prop::collection::vec(0usize..1500, 0..30),
            crlf in any::<bool>(),
        ) {
            let newline = if crlf { "\r\n" } else { "\n" };
            let input: String = payloads.iter().map(|p| format!(": c{newline}data: {p}{newline}{newline}")).collect();
            cuts.sort_unstable();
            let expected: Vec<SseEvent> = payloads.iter().map(|p| data(p)).collect();
            prop_assert_eq!(decode(input.as_bytes(), &cuts), expected);
        }
    }
}
