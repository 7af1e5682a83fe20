//! NDJSON and SSE framing: any bytes, cut anywhere, give the same frames as the whole input,
//! never a panic and never a frame past the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scheduler::framing::LineDecoder;
use scheduler::framing::sse::SseDecoder;

const MAX_LINE: usize = 4096;

fuzz_target!(|input: &[u8]| {
    // The first byte picks where the input is cut into chunks.
    let Some((&step, body)) = input.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));

    // A line over the bound is refused as soon as the buffered part passes it, so a refusal
    // may come earlier when cut finer; whatever both accept must agree.
    let chunks: Vec<&[u8]> = body.chunks(step).collect();
    if let (Some(whole), Some(cut)) = (lines(&[body]), lines(&chunks)) {
        assert_eq!(whole, cut, "lines depend on chunking");
    }
    if let (Some(whole), Some(cut)) = (events(&[body]), events(&chunks)) {
        assert_eq!(whole, cut, "SSE events depend on chunking");
    }
});

fn lines(chunks: &[&[u8]]) -> Option<Vec<bytes::Bytes>> {
    let mut decoder = LineDecoder::new(MAX_LINE);
    let mut out = Vec::new();
    for chunk in chunks {
        let lines = decoder.push(chunk).ok()?;
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE + chunk.len()));
        out.extend(lines);
    }
    out.extend(decoder.finish());
    Some(out)
}

fn events(chunks: &[&[u8]]) -> Option<Vec<(Option<String>, String)>> {
    let mut decoder = SseDecoder::new(MAX_LINE);
    let mut out = Vec::new();
    for chunk in chunks {
        for event in decoder.push(chunk).ok()? {
            assert!(event.data.len() <= MAX_LINE);
            out.push((event.event, event.data));
        }
    }
    Some(out)
}
