//! Renders one scene into a directory: `cargo run -p tessera-world --example render -- SEED DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let seed = tessera_world::parse_seed(&arguments.next().unwrap_or_else(|| "0".to_string()))?;
    let dir = std::path::PathBuf::from(
        arguments
            .next()
            .unwrap_or_else(|| "world-scene".to_string()),
    );
    for path in tessera_world::render_scene_to_dir(seed, &dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
