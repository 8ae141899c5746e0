//! Reproducible example problems: the village of the mission and synthetic instances for tests
//! and benchmarks (`communalia bench planner`). Deterministic: same arguments, same problem.

use crate::horizon::{HorizonInput, HorizonLoad};
use crate::model::{
    Battery, Deadline, EnergyNeed, HealthReserve, Load, Priorities, Sharing, Snapshot, Tier,
};
use crate::selfcons;

/// Small deterministic generator (SplitMix64), so fixtures need no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The village of the mission: clinic, cold room, pump, school, homes, workshop, comfort;
/// 11.15 kW when everything asks its nominal power.
pub fn village() -> Priorities {
    let homes = (1..=6)
        .map(|i| Load::on_off(format!("home_{i}"), 400.0))
        .chain([Load::on_off("school", 800.0)])
        .collect();
    Priorities {
        tiers: vec![
            Tier::new(
                "health",
                Sharing::FairShare,
                vec![
                    Load::on_off("clinic_fridge", 150.0).health(),
                    Load::on_off("clinic_lights", 100.0).health(),
                ],
            ),
            Tier::new(
                "cold_storage",
                Sharing::InOrder,
                vec![
                    Load::on_off("cold_room", 1200.0),
                    Load::on_off("school_freezer", 300.0),
                ],
            ),
            Tier::new(
                "water",
                Sharing::FairShare,
                vec![Load::on_off("pump", 1500.0).with_need(EnergyNeed {
                    energy_wh: 6000.0,
                    deadline: Deadline::MinuteOfDay(20 * 60),
                })],
            ),
            Tier::new("homes_and_school", Sharing::FairShare, homes),
            Tier::new(
                "workshop",
                Sharing::FairShare,
                vec![Load::on_off("workshop", 800.0)],
            ),
            Tier::new(
                "comfort",
                Sharing::FairShare,
                vec![
                    Load::adjustable("ev_charger", 1400.0, 3700.0),
                    Load::on_off("fans", 200.0),
                ],
            ),
        ],
        min_switch_secs: 0.0,
    }
}

/// `n` loads in 6 tiers, every third one adjustable, demands 50 W..3 kW; the first tier is health.
pub fn synthetic_priorities(n: usize, seed: u64) -> Priorities {
    let mut rng = Rng::new(seed);
    let mut tiers: Vec<Tier> = (0..6)
        .map(|t| {
            let sharing = if t == 2 {
                Sharing::InOrder
            } else {
                Sharing::FairShare
            };
            Tier::new(format!("tier_{}", t + 1), sharing, Vec::new())
        })
        .collect();
    for i in 0..n {
        let t = i * 6 / n.max(1);
        let demand = (rng.range(50.0, 3000.0) / 10.0).round() * 10.0;
        let mut load = if i % 3 == 2 {
            let min = (demand * rng.range(0.1, 0.5) / 10.0).round() * 10.0;
            Load::adjustable(format!("load_{i}"), min, demand)
        } else {
            Load::on_off(format!("load_{i}"), demand)
        };
        load.health = t == 0;
        if let Some(tier) = tiers.get_mut(t) {
            tier.loads.push(load);
        }
    }
    Priorities {
        tiers,
        min_switch_secs: 0.0,
    }
}

/// A scarce snapshot for [`synthetic_priorities`]: about 40 % of the total demand available,
/// with a battery under a health reserve half of the time.
pub fn synthetic_snapshot(p: &Priorities, seed: u64) -> Snapshot {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let total: f64 = p
        .tiers
        .iter()
        .flat_map(|t| &t.loads)
        .map(|l| l.demand_watts)
        .sum();
    Snapshot {
        pv_watts: total * rng.range(0.2, 0.5),
        grid_allowance_watts: 0.0,
        uncontrolled_watts: total * 0.02,
        battery: Some(Battery {
            capacity_wh: total * 2.0,
            soc: rng.range(0.15, 0.8),
            soc_min: 0.1,
            soc_max: 0.95,
            max_charge_watts: total * 0.1,
            max_discharge_watts: total * 0.1,
            charge_efficiency: 0.95,
            discharge_efficiency: 0.95,
        }),
        planned_charge_watts: 0.0,
        health_reserve: HealthReserve::Hours(10.0),
        now_secs: 0.0,
    }
}

/// A horizon problem of `steps` × 15 min from 06:00 with `n` loads in 6 tiers: a sunny day's PV,
/// a battery, a base load, and every third load a deferrable need with a deadline.
pub fn synthetic_horizon(n: usize, steps: usize, seed: u64) -> HorizonInput {
    let mut rng = Rng::new(seed);
    let pv_peak = 600.0 * n as f64;
    let start_minute: u32 = 6 * 60;
    let pv_watts: Vec<f64> = (0..steps)
        .map(|t| {
            let minute = (start_minute as usize + 15 * t) % 1440;
            let x = (minute as f64 - 360.0) / 720.0;
            if (0.0..=1.0).contains(&x) {
                pv_peak * (std::f64::consts::PI * x).sin() * rng.range(0.7, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    let loads = (0..n)
        .map(|i| {
            let rank = 1 + i * 6 / n.max(1);
            let watts = (rng.range(50.0, 1500.0) / 10.0).round() * 10.0;
            let id = format!("load_{i}");
            if i % 3 == 2 {
                let deadline = 480 + 60 * rng.below(14) as u32;
                HorizonLoad::deferrable(
                    id,
                    rank,
                    watts,
                    EnergyNeed {
                        energy_wh: watts * rng.range(1.0, 4.0),
                        deadline: Deadline::MinuteOfDay((start_minute + deadline) % 1440),
                    },
                )
            } else {
                let duty = rng.range(0.1, 0.6);
                HorizonLoad::steady(id, rank, watts * duty)
            }
        })
        .map(|mut l| {
            l.health = l.rank == 1;
            l
        })
        .collect();
    let mut input = HorizonInput::new(15, start_minute, pv_watts);
    input.uncontrolled_watts = vec![100.0 * n as f64 / 8.0; steps];
    input.battery = Some(Battery {
        capacity_wh: 1500.0 * n as f64,
        soc: 0.5,
        soc_min: 0.1,
        soc_max: 0.95,
        max_charge_watts: 300.0 * n as f64,
        max_discharge_watts: 300.0 * n as f64,
        charge_efficiency: 0.95,
        discharge_efficiency: 0.95,
    });
    input.loads = loads;
    input.import = Some(crate::horizon::GridImport {
        max_import_watts: 200.0 * n as f64,
        price_per_kwh: (0..steps)
            .map(|t| if (t / 4 + 6) % 24 >= 17 { 0.3 } else { 0.15 })
            .collect(),
    });
    input.reserve_wh = vec![300.0 * n as f64 / 8.0; steps];
    input
}

/// An EMHASS-style instance: `steps` steps of 24 h / `steps` each (e.g. 96 × 15 min), `n`
/// deferrable loads, the battery and prices of the issue (20 kWh, 5 kW each way, 95 %, SoC
/// 10-90 %, start 50 %, end at least the start).
pub fn emhass_instance(n: usize, steps: usize, seed: u64) -> selfcons::Instance {
    let mut rng = Rng::new(seed);
    let step_minutes = (1440 / steps.max(1)) as u32;
    let hour = |t: usize| (t as f64 + 0.5) * step_minutes as f64 / 60.0;
    let pv_watts = (0..steps)
        .map(|t| {
            let x = (hour(t) - 6.0) / 14.0;
            if (0.0..=1.0).contains(&x) {
                (9000.0 * (std::f64::consts::PI * x).sin() * rng.range(0.6, 1.0)).round()
            } else {
                0.0
            }
        })
        .collect();
    let base_load_watts = (0..steps)
        .map(|t| {
            let h = hour(t);
            let evening = if (18.0..22.0).contains(&h) {
                900.0
            } else {
                0.0
            };
            (300.0 + evening + rng.range(0.0, 400.0)).round()
        })
        .collect();
    let import_price = (0..steps)
        .map(|t| {
            let h = hour(t);
            if (17.0..21.0).contains(&h) {
                0.32
            } else if (7.0..17.0).contains(&h) {
                0.22
            } else {
                0.15
            }
        })
        .collect();
    let deferrables = (0..n)
        .map(|_| {
            let watts = [500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0][rng.below(6) as usize];
            let hours = 1.0 + rng.below(5) as f64;
            selfcons::Deferrable {
                nominal_watts: watts,
                operating_steps: ((hours * 60.0 / step_minutes as f64).round() as usize)
                    .clamp(1, steps),
            }
        })
        .collect();
    selfcons::Instance {
        step_minutes,
        steps,
        pv_watts,
        base_load_watts,
        import_price,
        export_price: vec![0.05; steps],
        battery: selfcons::BatterySpec {
            capacity_wh: 20_000.0,
            max_charge_watts: 5000.0,
            max_discharge_watts: 5000.0,
            charge_efficiency: 0.95,
            discharge_efficiency: 0.95,
            soc_min: 0.1,
            soc_max: 0.9,
            soc_start: 0.5,
            soc_end_min: 0.5,
        },
        grid: selfcons::GridSpec {
            max_import_watts: 9000.0 + 1000.0 * n as f64,
            max_export_watts: 9000.0,
        },
        deferrables,
    }
}
