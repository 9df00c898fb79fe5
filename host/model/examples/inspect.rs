//! Print a checkpoint summary, as `tessera model inspect PATH` will:
//! `cargo run -p tessera-model --example inspect -- PATH`.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: inspect PATH (a checkpoint directory or .safetensors file)");
        std::process::exit(2);
    };
    match tessera_model::inspect(&path) {
        Ok(summary) => print!("{summary}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
