//! Streamed tool calls arrive in pieces keyed by `index`: the first piece of a call carries
//! its id, type and name, later pieces more of its arguments. One merge for every place that
//! assembles whole calls (the scheduler's non-streamed answers, the gateway's responses).

use crate::v1::ToolCallDelta;

/// Adds `piece` to `calls`: a new call, or more arguments for the call with its index.
pub fn merge_tool_call(calls: &mut Vec<ToolCallDelta>, piece: ToolCallDelta) {
    match calls.iter_mut().find(|call| call.index == piece.index) {
        Some(call) => {
            call.arguments.push_str(&piece.arguments);
            if call.name.is_empty() {
                call.name = piece.name;
            }
            if call.id.is_empty() {
                call.id = piece.id;
            }
        }
        None => calls.push(piece),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(index: u32, id: &str, name: &str, arguments: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.into(),
            r#type: "function".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn pieces_join_by_index_whatever_the_order() {
        let mut calls = Vec::new();
        for p in [
            piece(1, "b", "g", "{\"y\""),
            piece(0, "a", "f", "{\"x\""),
            piece(0, "", "", ":1}"),
            piece(1, "", "", ":2}"),
        ] {
            merge_tool_call(&mut calls, p);
        }
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[1].id.as_str(), calls[1].arguments.as_str()),
            ("a", "{\"x\":1}")
        );
        assert_eq!(
            (calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("g", "{\"y\":2}")
        );
    }
}
