//! Line framing: turns arbitrarily split byte chunks into complete lines, with a bound on line
//! length so a backend that never sends a newline cannot grow memory without limit. NDJSON uses
//! it directly (blank lines skipped); SSE builds on it (blank lines end events).

pub mod sse;

use bytes::{Bytes, BytesMut};

/// A line grew past the limit without a newline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {0} bytes")]
pub struct LineTooLong(pub usize);

/// Splits a byte stream into lines (without the `\n`, and without a trailing `\r`).
#[derive(Debug)]
pub struct LineDecoder {
    buffer: BytesMut,
    max_line: usize,
    keep_blank: bool,
}

impl LineDecoder {
    /// A decoder refusing lines longer than `max_line` bytes; blank lines are skipped (NDJSON).
    pub fn new(max_line: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_line,
            keep_blank: false,
        }
    }

    /// Like [`LineDecoder::new`] but blank lines are returned (empty) too: SSE needs them.
    pub fn keeping_blank(max_line: usize) -> Self {
        Self {
            keep_blank: true,
            ..Self::new(max_line)
        }
    }

    /// Feeds `chunk` and returns every line it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, LineTooLong> {
        let scan_from = self.buffer.len();
        self.buffer.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut search_start = scan_from;
        while let Some(offset) = memchr::memchr(b'\n', &self.buffer[search_start..]) {
            let line = self.buffer.split_to(search_start + offset + 1).freeze();
            search_start = 0;
            if let Some(line) = trim_line(line, self.keep_blank) {
                lines.push(line);
            }
        }
        if self.buffer.len() > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        Ok(lines)
    }

    /// The end of the input: whatever is left is the last line (a final object without `\n`).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if rest.is_empty() {
            return None;
        }
        trim_line(rest, self.keep_blank)
    }
}

fn trim_line(mut line: Bytes, keep_blank: bool) -> Option<Bytes> {
    if line.last() == Some(&b'\n') {
        line.truncate(line.len() - 1);
    }
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
    (keep_blank || !line.iter().all(u8::is_ascii_whitespace)).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut decoder = LineDecoder::new(1 << 20);
        let mut lines = Vec::new();
        let mut start = 0;
        for cut in cuts.iter().copied().chain([input.len()]) {
            let cut = cut.clamp(start, input.len());
            lines.extend(decoder.push(&input[start..cut]).unwrap());
            start = cut;
        }
        lines.extend(decoder.finish());
        lines
    }

    #[test]
    fn splits_lines_skips_blank_and_flushes_the_tail() {
        let lines = decode_all(b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}", &[3, 9]);
        assert_eq!(
            lines,
            vec![
                Bytes::from("{\"a\":1}"),
                Bytes::from("{\"b\":2}"),
                Bytes::from("{\"c\":3}")
            ]
        );
    }

    #[test]
    fn refuses_an_endless_line() {
        let mut decoder = LineDecoder::new(8);
        assert_eq!(decoder.push(b"0123456789").unwrap_err(), LineTooLong(8));
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_lines(
            lines in prop::collection::vec("[a-z0-9{}\":, ]{1,40}", 0..20),
            mut cuts in prop::collection::vec(0usize..2000, 0..30),
        ) {
            let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            cuts.sort_unstable();
            let expected: Vec<Bytes> = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| Bytes::from(l.clone()))
                .collect();
            prop_assert_eq!(decode_all(input.as_bytes(), &cuts), expected);
        }
    }
}
