//! Any bytes as all that a client sends on one connection to keel's HTTP/1.1 server, split into
//! reads of any size: the server must not panic and must finish, and whatever it writes back
//! must be HTTP/1.x answers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let answers = runtime.block_on(keel_gateway::serve_bytes(input, usize::from(step) + 1));
    assert!(answers.is_empty() || answers.starts_with(b"HTTP/1."), "not an HTTP answer: {:?}", String::from_utf8_lossy(&answers));
});
