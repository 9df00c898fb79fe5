//! Decodes every id list of a JSON list and prints the texts as a JSON list, for differential
//! checks: `cargo run --release --example decode_json -- tokenizer.json ids.json`.

use tessera_text::TextTokenizer;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: decode_json <tokenizer.json> <ids.json>";
    let tokenizer_bytes = std::fs::read(args.next().expect(usage)).expect("read tokenizer file");
    let sequences: Vec<Vec<u32>> =
        serde_json::from_slice(&std::fs::read(args.next().expect(usage)).expect("read ids"))
            .expect("ids.json is a list of id lists");
    let tokenizer = TextTokenizer::from_json_bytes(&tokenizer_bytes).expect("load tokenizer");
    let texts: Vec<String> = sequences.iter().map(|ids| tokenizer.decode(ids)).collect();
    println!("{}", serde_json::to_string(&texts).expect("serialise"));
}
