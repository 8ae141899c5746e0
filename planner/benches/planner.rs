//! Criterion benchmarks of the planner, for regressions: allocation of 300 loads (with and without
//! loads waiting their turn), a 96-step horizon with 32 loads, and the EMHASS-style problem with 8
//! deferrables over 96 steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_planner::{Rotation, allocate, fixtures, plan_horizon, selfcons};
use criterion::{Criterion, criterion_group, criterion_main};

fn allocation(c: &mut Criterion) {
    let p = fixtures::synthetic_priorities(300, 1);
    let snapshots: Vec<_> = (0..16)
        .map(|i| fixtures::synthetic_snapshot(&p, i))
        .collect();
    let mut i = 0;
    c.bench_function("allocate_300_loads_6_tiers", |b| {
        b.iter(|| {
            i = (i + 1) % snapshots.len();
            allocate(&p, &snapshots[i], &Rotation::default())
        })
    });
    // The same with a rotation history in which loads are waiting for their turn.
    let mut rotation = Rotation::default();
    for s in &snapshots {
        rotation = allocate(&p, s, &rotation).rotation;
    }
    c.bench_function("allocate_300_loads_6_tiers_rotating", |b| {
        b.iter(|| {
            i = (i + 1) % snapshots.len();
            allocate(&p, &snapshots[i], &rotation)
        })
    });
}

fn horizon(c: &mut Criterion) {
    let input = fixtures::synthetic_horizon(32, 96, 1);
    c.bench_function("horizon_96_steps_32_loads", |b| {
        b.iter(|| plan_horizon(&input))
    });
}

fn self_consumption(c: &mut Criterion) {
    let instance = fixtures::emhass_instance(8, 96, 7);
    c.bench_function("emhass_8_deferrables_96_steps", |b| {
        b.iter(|| selfcons::solve(&instance).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = allocation, horizon, self_consumption
}
criterion_main!(benches);
