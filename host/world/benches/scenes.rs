//! Throughput of the shapes world: scenes per second with every modality, on one core and on all
//! cores (the way `write_dataset` runs), plus the renderer alone.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use tessera_world::scene::SceneSpec;

/// Scenes per iteration of the parallel benchmark: enough to keep every core busy.
const BATCH: u64 = 32;

fn scenes(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("world");
    group.sample_size(20);

    group.throughput(Throughput::Elements(1));
    let mut seed = 0u64;
    group.bench_function("render_only", |bench| {
        bench.iter(|| {
            seed += 1;
            tessera_world::render::render(&SceneSpec::from_seed(seed))
        })
    });
    group.bench_function("all_modalities_one_core", |bench| {
        bench.iter(|| {
            seed += 1;
            tessera_world::modalities::modalities_of(SceneSpec::from_seed(seed))
        })
    });

    group.throughput(Throughput::Elements(BATCH));
    let mut first = 0u64;
    group.bench_with_input(
        BenchmarkId::new("all_modalities_all_cores", BATCH),
        &BATCH,
        |bench, &batch| {
            bench.iter(|| {
                first += batch;
                (first..first + batch)
                    .into_par_iter()
                    .map(|seed| {
                        tessera_world::modalities::modalities_of(SceneSpec::from_seed(seed))
                            .caption
                            .len()
                    })
                    .sum::<usize>()
            })
        },
    );

    // Writing a dataset end to end (shards on disk), as `tessera world dataset` does.
    let dir = tempfile::tempdir().expect("temporary directory");
    group.bench_with_input(
        BenchmarkId::new("write_dataset", BATCH),
        &BATCH,
        |bench, &batch| {
            bench.iter(|| {
                let options = tessera_world::DatasetOptions {
                    count: batch as usize,
                    first_seed: 0,
                    out: dir.path().to_path_buf(),
                    threads: 0,
                };
                tessera_world::write_dataset(&options, &|_, _| {}).expect("dataset")
            })
        },
    );
    group.finish();
}

criterion_group!(benches, scenes);
criterion_main!(benches);
