//! Both configuration files: the scheduler's routing TOML (parsed, validated, compiled into a
//! route table) and the gateway's governance TOML (parsed, validated, compiled into a policy).
//! Any text is a config or an error, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use scheduler::routing::FileConfig;
use scheduler::routing::table::{RouteTable, Timeouts};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(routes) = FileConfig::parse(text) {
        let second = Duration::from_secs(1);
        let defaults = Timeouts {
            connect: second,
            ttft: second,
            idle: second,
            total: second,
        };
        let _ = RouteTable::from_config(&routes, defaults);
    }
    if let Ok(file) = gateway::governance::config::GatewayFile::parse(text) {
        // Tokenizer entries name files on disk: compiling them would fuzz the filesystem.
        if file.tokenizers.is_empty() {
            let _ = gateway::governance::policy::Policy::compile(&file);
        }
    }
});
