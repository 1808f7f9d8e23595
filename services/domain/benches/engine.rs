//! The matching engine alone, on one core: events per second with 10k open
//! orders and 10k open capacities per family (target: at least 2M events/s).
//!
//! Two figures: `decide` is the engine (its decisions, the form a restore
//! replays and the matcher renders); `decide_and_render` adds rendering every
//! decision into the contract's records, as `Engine::apply` returns them.
//! `decide` prefetches `PREFETCH_AHEAD` events ahead, as the matcher's
//! restore does. With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in the
//! environment it runs as the matcher's pods do (huge pages; README).
//! The `snapshot` group times taking and loading a book snapshot of the
//! warm state.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use orelink_domain::freight::Network;
use orelink_domain::matching::{Decision, Engine, PREFETCH_AHEAD};
use orelink_domain::workload::steady_state;
use orelink_domain::Topology;
use std::hint::black_box;
use std::sync::Arc;

fn engine(c: &mut Criterion) {
    let net = Arc::new(Network::new(&Topology::embedded()));
    let w = steady_state(10_000, 100_000, 42);
    let mut warm = Engine::new(net);
    for i in &w.warm {
        warm.apply(i);
    }
    let s = warm.summary();
    assert!(s.open_orders >= 19_000 && s.open_capacities >= 19_000, "steady state not reached: {s:?}");

    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(w.stream.len() as u64));
    g.sample_size(10);
    g.bench_function("decide/steady_state_10k_open_per_family", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut e| {
                let mut out: Vec<Decision> = Vec::with_capacity(64);
                let mut decisions = 0usize;
                for (n, i) in w.stream.iter().enumerate() {
                    if let Some(ahead) = w.stream.get(n + PREFETCH_AHEAD) {
                        e.prefetch(ahead);
                    }
                    e.decide(black_box(i), &mut out);
                    decisions += out.len();
                    out.clear();
                }
                // The engine goes back to criterion, which drops it after the
                // measurement: tearing down its books is not event work.
                (e, decisions)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("decide_and_render/steady_state_10k_open_per_family", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut e| {
                let mut outputs = 0usize;
                for i in &w.stream {
                    outputs += e.apply(black_box(i)).len();
                }
                (e, outputs)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // A book snapshot of the same steady state, and loading it back.
    let bytes = warm.snapshot();
    let net = warm.network().clone();
    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(10);
    g.bench_function("take/steady_state_10k_open_per_family", |b| b.iter(|| black_box(warm.snapshot())));
    g.bench_function("load/steady_state_10k_open_per_family", |b| b.iter(|| Engine::from_snapshot(net.clone(), black_box(&bytes)).expect("a snapshot just taken loads")));
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
