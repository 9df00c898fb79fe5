//! Times each phase of scene generation: `cargo run -p tessera-world --example phase_times`.

use std::time::Instant;

use tessera_world::scene::SceneSpec;

fn main() {
    let scenes: u64 = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let mut totals = [0.0f64; 5];
    for seed in 0..scenes {
        let start = Instant::now();
        let scene = SceneSpec::from_seed(seed);
        let images = tessera_world::render::render(&scene);
        totals[0] += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _edges = tessera_world::edges::canny_edges(&images.rgb);
        totals[1] += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let boxes = tessera_world::boxes::boxes_from_instances(&scene, &images.instance);
        let caption = tessera_world::caption::caption_for(&scene, &boxes);
        totals[2] += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _palette = tessera_world::palette::dominant_colours(&images.rgb);
        totals[3] += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let _metadata = tessera_world::metadata::compute_metadata(&images, &boxes, &caption);
        totals[4] += start.elapsed().as_secs_f64();
    }
    for (name, total) in ["render", "edges", "boxes+caption", "palette", "metadata"]
        .iter()
        .zip(totals)
    {
        println!("{name:>14}: {:.2} ms/scene", total * 1000.0 / scenes as f64);
    }
}
