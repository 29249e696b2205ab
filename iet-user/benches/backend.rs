//! Backing-store throughput: 4 KiB and 128 KiB positional writes and reads on the RAM
//! and sparse-file engines, with and without FUA. Run with `cargo bench -p iet-user --bench backend`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iet::backend::{BlockBackend, open_backend, open_or_create_backend};

const SIZE: u64 = 64 << 20;

fn engines() -> Vec<(&'static str, Arc<dyn BlockBackend>, std::path::PathBuf)> {
    let path = std::env::temp_dir().join(format!("iet-bench-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = open_or_create_backend(path.to_str().expect("utf-8 temp path"), SIZE)
        .expect("file backend");
    let mem = open_backend("mem:64M").expect("mem backend");
    vec![("mem", mem, path.clone()), ("file", file, path)]
}

fn io(c: &mut Criterion) {
    let engines = engines();
    for &len in &[4096usize, 128 * 1024] {
        let mut group = c.benchmark_group(format!("io_{}k", len / 1024));
        group.throughput(Throughput::Bytes(len as u64));
        let buf = vec![0x5au8; len];
        for (name, b, _) in &engines {
            let slots = SIZE / len as u64;
            let mut i = 0u64;
            group.bench_function(BenchmarkId::new("write", name), |bench| {
                bench.iter(|| {
                    i = (i + 7919) % slots;
                    b.write_at(black_box(&buf), i * len as u64, false)
                        .expect("write");
                });
            });
            let mut out = vec![0u8; len];
            group.bench_function(BenchmarkId::new("read", name), |bench| {
                bench.iter(|| {
                    i = (i + 7919) % slots;
                    b.read_at(black_box(&mut out), i * len as u64)
                        .expect("read");
                });
            });
            if *name == "file" {
                group.sample_size(10);
                group.bench_function(BenchmarkId::new("write_fua", name), |bench| {
                    bench.iter(|| {
                        i = (i + 7919) % slots;
                        b.write_at(black_box(&buf), i * len as u64, true)
                            .expect("fua write");
                    });
                });
            }
        }
        group.finish();
    }
    for (_, _, path) in engines {
        let _ = std::fs::remove_file(path);
    }
}

criterion_group!(benches, io);
criterion_main!(benches);
