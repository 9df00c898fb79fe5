//! Encodes every string of a JSON list and prints `[{"ids": [...], "decoded": "..."}]`, for
//! differential checks against another tokenizer implementation:
//! `cargo run --release --example encode_json -- tokenizer.json texts.json`.

use tessera_text::TextTokenizer;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: encode_json <tokenizer.json> <texts.json>";
    let tokenizer_bytes = std::fs::read(args.next().expect(usage)).expect("read tokenizer file");
    let texts: Vec<String> =
        serde_json::from_slice(&std::fs::read(args.next().expect(usage)).expect("read texts"))
            .expect("texts.json is a list of strings");
    let tokenizer = TextTokenizer::from_json_bytes(&tokenizer_bytes).expect("load tokenizer");
    let results: Vec<serde_json::Value> = texts
        .iter()
        .map(|text| {
            let ids = tokenizer.encode(text);
            serde_json::json!({ "ids": ids, "decoded": tokenizer.decode(&ids) })
        })
        .collect();
    println!("{}", serde_json::to_string(&results).expect("serialise"));
}
