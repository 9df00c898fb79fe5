//! Measures native encode throughput on caption-like text: `cargo run --release --example
//! throughput -- path/to/wordpiece_4m_30k.json`.

use std::time::Instant;

use tessera_text::TextTokenizer;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: throughput <tokenizer.json>");
    let bytes = std::fs::read(&path).expect("read tokenizer file");
    let started = Instant::now();
    let tokenizer = TextTokenizer::from_json_bytes(&bytes).expect("load tokenizer");
    println!("load: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let sentence = "A Lake-house, with a Boat! A nice restaurant in Santorini at sunset, \
                    potted plant next to a DINING TABLE. Café crème brûlée [S_1] v0=12 ";
    let text = sentence.repeat(4 * 1024 * 1024 / sentence.len());
    let started = Instant::now();
    let ids = tokenizer.encode(&text);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "encode: {} bytes -> {} ids in {:.1} ms = {:.1} MB/s",
        text.len(),
        ids.len(),
        seconds * 1e3,
        text.len() as f64 / seconds / 1e6
    );
    let started = Instant::now();
    let decoded = tokenizer.decode(&ids);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "decode: {} ids in {:.1} ms ({} bytes)",
        ids.len(),
        seconds * 1e3,
        decoded.len()
    );
}
