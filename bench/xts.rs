//! Kernel figures for `bench/run`: AES-XTS (every back end this CPU has)
//! and BLAKE3, one thread each. Run with `cargo bench --bench xts`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use evfs::crypto::xts::{Backend, Xts};

/// 64 KiB of 4096-byte sectors: hot in cache, as `openssl speed` measures.
const HOT: usize = 64 << 10;
/// 64 MiB: streaming through memory, as a backup does.
const COLD: usize = 64 << 20;

fn xts(c: &mut Criterion) {
    let key: Vec<u8> = (0u8..64).collect();
    let mut group = c.benchmark_group("xts");
    for backend in Backend::ALL.iter().copied().filter(|b| b.is_available()) {
        let xts = Xts::with_backend(&key, backend)
            .expect("a 64-byte key")
            .expect("the back end is available");
        for (size_name, size) in [("hot", HOT), ("64MiB", COLD)] {
            let mut buf = vec![0x5au8; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(
                BenchmarkId::new(format!("encrypt-{}", backend.name()), size_name),
                |b| b.iter(|| xts.encrypt_sectors(&mut buf, 4096, 7)),
            );
            group.bench_function(
                BenchmarkId::new(format!("decrypt-{}", backend.name()), size_name),
                |b| b.iter(|| xts.decrypt_sectors(&mut buf, 4096, 7)),
            );
        }
    }
    group.finish();
}

fn blake3(c: &mut Criterion) {
    let buf = vec![0x5au8; 1 << 20];
    let mut group = c.benchmark_group("blake3");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("hash-1MiB", |b| b.iter(|| blake3::hash(&buf)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = xts, blake3
}
criterion_main!(benches);
