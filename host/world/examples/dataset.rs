//! Writes a dataset: `cargo run --release -p tessera-world --example dataset -- COUNT DIR [FIRST_SEED]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let count: usize = arguments
        .first()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(100);
    let out = std::path::PathBuf::from(
        arguments
            .get(1)
            .cloned()
            .unwrap_or_else(|| "world-dataset".into()),
    );
    let first_seed = arguments
        .get(2)
        .map(|text| tessera_world::parse_seed(text))
        .transpose()?
        .unwrap_or(0);
    let options = tessera_world::DatasetOptions {
        count,
        first_seed,
        out,
        threads: 0,
    };
    let start = std::time::Instant::now();
    let summary = tessera_world::write_dataset(&options, &|done, total| {
        if done % 500 == 0 || done == total {
            eprintln!("{done}/{total}");
        }
    })?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{} scenes, {:.1} MB in {seconds:.1} s ({:.0} scenes/s)",
        summary.count,
        summary.total_bytes as f64 / 1e6,
        summary.count as f64 / seconds
    );
    let dataset = tessera_world::Dataset::open(&summary.out)?;
    println!(
        "reopened: {} scenes; scene 0 caption: {}",
        dataset.len(),
        dataset.record(0)?.caption
    );
    Ok(())
}
