//! Fuzz the ONNX loader: arbitrary bytes must give a model or an error, never a panic, and a
//! model that loads must also survive shape preparation and inspection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut m) = octet::frontend::onnx::import_bytes(data, Path::new("fuzz.onnx"), None) {
        let _ = m.graph.verify();
        let _ = octet::prepare::prepare(&mut m.graph, &[]);
        let _ = m.graph.to_text();
    }
});
