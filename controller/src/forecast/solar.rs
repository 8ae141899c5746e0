//! Sun position, clear-sky PV power and sunrise, from the site's coordinates and arrays.
//!
//! Pure functions of a UTC instant; the caller passes the time. The sun position follows the NOAA
//! solar calculator's equations (accurate to about a minute for sunrise and a fraction of a degree
//! for elevation, plenty for a 15-minute plan). Clear-sky irradiance uses the Meinel air-mass model
//! for beam irradiance and a fixed diffuse share; an array's power follows its tilt and azimuth.
//! Measured production scales the clear-sky curve (`Calibration`), so clouds seen in the last hours
//! shape the next ones without any weather service.

use chrono::{DateTime, Duration, Timelike, Utc};

/// Where the site is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    pub latitude: f64,
    /// East positive.
    pub longitude: f64,
}

/// A PV array: peak power and orientation (azimuth 180 = facing south, 90 = east).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Array {
    pub kwp: f64,
    pub tilt_degrees: f64,
    pub azimuth_degrees: f64,
}

/// The sun seen from a place: elevation above the horizon and azimuth from north, clockwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SunPosition {
    pub elevation_degrees: f64,
    pub azimuth_degrees: f64,
}

/// Share of rated power an array delivers under standard irradiance once wiring, inverter,
/// soiling and temperature losses are counted.
const SYSTEM_DERATE: f64 = 0.85;
/// Extraterrestrial normal irradiance, W/m².
const SOLAR_CONSTANT: f64 = 1353.0;
/// Sunrise is when the sun's upper limb meets the horizon, refraction included.
const SUNRISE_ELEVATION: f64 = -0.833;

fn julian_century(t: DateTime<Utc>) -> f64 {
    let jd = t.timestamp() as f64 / 86_400.0 + 2_440_587.5;
    (jd - 2_451_545.0) / 36_525.0
}

/// Sun declination (degrees) and equation of time (minutes) at an instant (NOAA).
fn declination_and_equation_of_time(t: DateTime<Utc>) -> (f64, f64) {
    let jc = julian_century(t);
    let mean_long = (280.466_46 + jc * (36_000.769_83 + jc * 0.000_303_2)).rem_euclid(360.0);
    let mean_anom = 357.529_11 + jc * (35_999.050_29 - 0.000_153_7 * jc);
    let ecc = 0.016_708_634 - jc * (0.000_042_037 + 0.000_000_126_7 * jc);
    let m = mean_anom.to_radians();
    let center = m.sin() * (1.914_602 - jc * (0.004_817 + 0.000_014 * jc))
        + (2.0 * m).sin() * (0.019_993 - 0.000_101 * jc)
        + (3.0 * m).sin() * 0.000_289;
    let true_long = mean_long + center;
    let omega = 125.04 - 1934.136 * jc;
    let app_long = true_long - 0.005_69 - 0.004_78 * omega.to_radians().sin();
    let mean_obliq =
        23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.000_59 - jc * 0.001_813))) / 60.0) / 60.0;
    let obliq = mean_obliq + 0.002_56 * omega.to_radians().cos();
    let decl = (obliq.to_radians().sin() * app_long.to_radians().sin())
        .asin()
        .to_degrees();
    let y = (obliq.to_radians() / 2.0).tan().powi(2);
    let l0 = mean_long.to_radians();
    let eot = 4.0
        * (y * (2.0 * l0).sin() - 2.0 * ecc * m.sin() + 4.0 * ecc * y * m.sin() * (2.0 * l0).cos()
            - 0.5 * y * y * (4.0 * l0).sin()
            - 1.25 * ecc * ecc * (2.0 * m).sin())
        .to_degrees();
    (decl, eot)
}

/// Where the sun is, seen from `place` at instant `t`.
pub fn sun_position(place: Place, t: DateTime<Utc>) -> SunPosition {
    let (decl, eot) = declination_and_equation_of_time(t);
    let minutes = f64::from(t.hour() * 60 + t.minute()) + f64::from(t.second()) / 60.0;
    let true_solar = (minutes + eot + 4.0 * place.longitude).rem_euclid(1440.0);
    let hour_angle = true_solar / 4.0 - 180.0;
    let (lat, dec, ha) = (
        place.latitude.to_radians(),
        decl.to_radians(),
        hour_angle.to_radians(),
    );
    let cos_zenith = (lat.sin() * dec.sin() + lat.cos() * dec.cos() * ha.cos()).clamp(-1.0, 1.0);
    let zenith = cos_zenith.acos();
    let elevation = 90.0 - zenith.to_degrees();
    // Azimuth from north, clockwise.
    let denom = lat.cos() * zenith.sin();
    let azimuth = if denom.abs() < 1e-9 {
        if place.latitude > 0.0 { 180.0 } else { 0.0 }
    } else {
        let cos_az = ((lat.sin() * cos_zenith) - dec.sin()) / denom;
        let az = cos_az.clamp(-1.0, 1.0).acos().to_degrees();
        if hour_angle > 0.0 {
            (az + 180.0).rem_euclid(360.0)
        } else {
            (540.0 - az).rem_euclid(360.0)
        }
    };
    SunPosition {
        elevation_degrees: elevation,
        azimuth_degrees: azimuth,
    }
}

/// Clear-sky power of the arrays, in watts, at instant `t`.
pub fn clear_sky_watts(place: Place, arrays: &[Array], t: DateTime<Utc>) -> f64 {
    let sun = sun_position(place, t);
    if sun.elevation_degrees <= 0.0 {
        return 0.0;
    }
    let zenith = (90.0 - sun.elevation_degrees).to_radians();
    // Kasten-Young air mass, then Meinel's beam attenuation.
    let air_mass =
        1.0 / (zenith.cos() + 0.505_72 * (96.079_95 - zenith.to_degrees()).powf(-1.6364));
    let beam_normal = SOLAR_CONSTANT * 0.7_f64.powf(air_mass.powf(0.678));
    let diffuse_horizontal = 0.1 * beam_normal;
    let global_horizontal = beam_normal * zenith.cos() + diffuse_horizontal;
    arrays
        .iter()
        .map(|a| {
            let tilt = a.tilt_degrees.to_radians();
            let cos_incidence = zenith.cos() * tilt.cos()
                + zenith.sin()
                    * tilt.sin()
                    * (sun.azimuth_degrees - a.azimuth_degrees).to_radians().cos();
            let beam = beam_normal * cos_incidence.max(0.0);
            let sky = diffuse_horizontal * (1.0 + tilt.cos()) / 2.0;
            let ground = global_horizontal * 0.2 * (1.0 - tilt.cos()) / 2.0;
            let plane_of_array = beam + sky + ground;
            a.kwp * 1000.0 * plane_of_array / 1000.0 * SYSTEM_DERATE
        })
        .sum()
}

/// The next sunrise strictly after `t`, or `None` where the sun does not rise within two days
/// (polar night) or does not set (polar day: there is no night to bridge).
pub fn next_sunrise(place: Place, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let above = |at: DateTime<Utc>| sun_position(place, at).elevation_degrees > SUNRISE_ELEVATION;
    let step = Duration::minutes(10);
    let mut prev = t;
    let mut prev_up = above(prev);
    for _ in 0..(48 * 6) {
        let next = prev + step;
        let up = above(next);
        if up && !prev_up {
            // Bisect to the second.
            let (mut lo, mut hi) = (prev, next);
            while hi - lo > Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if above(mid) { hi = mid } else { lo = mid }
            }
            return Some(hi);
        }
        prev = next;
        prev_up = up;
    }
    None
}

/// How measured production compared with the clear-sky model over the recent past.
///
/// Feed it one sample per cycle; it keeps sums over a sliding window of whole minutes, so it uses
/// constant memory. The factor scales the clear-sky curve for the coming hours.
#[derive(Debug, Clone)]
pub struct Calibration {
    window: Duration,
    /// Per minute: (minute, measured watts, clear-sky watts, minutes it stands for).
    samples: std::collections::VecDeque<(DateTime<Utc>, f64, f64, f64)>,
}

/// A sample stands for the minutes since the one before, at most this many (a gap longer than
/// that is a silent inverter, which tells nothing).
const SAMPLE_SPAN_MAX_MINUTES: f64 = 15.0;

impl Calibration {
    pub fn new(window: Duration) -> Self {
        Calibration {
            window,
            samples: std::collections::VecDeque::new(),
        }
    }

    /// Records measured and clear-sky watts at `t`; `measured` is `None` when the inverter is silent
    /// (a silent inverter tells nothing about clouds).
    pub fn record(&mut self, t: DateTime<Utc>, measured: Option<f64>, clear_sky: f64) {
        if let Some(m) = measured.filter(|m| m.is_finite() && *m >= 0.0) {
            // One sample per minute is plenty for a ratio over hours.
            let minute = t
                .with_second(0)
                .and_then(|x| x.with_nanosecond(0))
                .unwrap_or(t);
            match self.samples.back_mut() {
                Some((last, ms, cs, _)) if *last == minute => {
                    *ms = ms.max(m);
                    *cs = cs.max(clear_sky);
                }
                back => {
                    // Cycles further apart than a minute (a slow cycle, or accelerated time)
                    // each stand for the minutes between them.
                    let span = back.map_or(1.0, |(last, ..)| {
                        ((minute - *last).num_seconds() as f64 / 60.0)
                            .clamp(1.0, SAMPLE_SPAN_MAX_MINUTES)
                    });
                    self.samples.push_back((minute, m, clear_sky, span));
                }
            }
        }
        while self
            .samples
            .front()
            .is_some_and(|(s, ..)| t - *s > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Measured over clear-sky energy in the window, between 0 and 1.2; `None` until the window
    /// saw enough sun to say (at least 30 minutes of clear-sky energy at 10 % of peak).
    pub fn factor(&self, peak_watts: f64) -> Option<f64> {
        let (m, c): (f64, f64) = self
            .samples
            .iter()
            .fold((0.0, 0.0), |(m, c), (_, ms, cs, w)| {
                (m + ms * w, c + cs * w)
            });
        // Sums are of watts times the minutes they stand for: watt-minutes.
        (c >= 0.1 * peak_watts * 30.0 && c > 0.0).then(|| (m / c).clamp(0.0, 1.2))
    }
}

/// The steps of a forecast: `steps` intervals of `step`, the first starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steps {
    pub start: DateTime<Utc>,
    pub step: Duration,
    pub steps: usize,
}

/// How clear-sky power is scaled: by the recent calibration, fading towards a typical factor over
/// `fade`, since weather persists for hours, not days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub recent: Option<f64>,
    pub typical: f64,
    pub fade: Duration,
}

/// A PV forecast in watts per step, each step's value taken at its middle.
pub fn pv_forecast(place: Place, arrays: &[Array], steps: Steps, scaling: Scaling) -> Vec<f64> {
    (0..steps.steps)
        .map(|i| {
            let from = steps.start + steps.step * i32::try_from(i).unwrap_or(i32::MAX);
            let mid = from + steps.step / 2;
            let w = match scaling.recent {
                Some(f) => {
                    let age = (mid - steps.start).num_seconds() as f64
                        / scaling.fade.num_seconds().max(1) as f64;
                    let blend = (1.0 - age).clamp(0.0, 1.0);
                    f * blend + scaling.typical * (1.0 - blend)
                }
                None => scaling.typical,
            };
            clear_sky_watts(place, arrays, mid) * w
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    const KAMPALA: Place = Place {
        latitude: 0.3476,
        longitude: 32.5825,
    };
    const BERLIN: Place = Place {
        latitude: 52.52,
        longitude: 13.405,
    };

    #[test]
    fn the_sun_stands_high_at_equatorial_noon_at_equinox() {
        // Solar noon at 32.58° E is about 09:50 UTC (plus the equation of time, about -7 min in March).
        let sun = sun_position(KAMPALA, utc(2026, 3, 20, 9, 57));
        assert!(sun.elevation_degrees > 88.0, "{sun:?}");
    }

    #[test]
    fn berlin_midsummer_noon_elevation_matches_the_almanac() {
        // 90 - 52.52 + 23.44 = 60.9 degrees at solar noon (about 11:07 UTC).
        let sun = sun_position(BERLIN, utc(2026, 6, 21, 11, 7));
        assert!((sun.elevation_degrees - 60.9).abs() < 0.3, "{sun:?}");
        assert!((sun.azimuth_degrees - 180.0).abs() < 3.0, "{sun:?}");
    }

    #[test]
    fn morning_sun_is_in_the_east_and_evening_sun_in_the_west() {
        let morning = sun_position(BERLIN, utc(2026, 6, 21, 5, 0));
        let evening = sun_position(BERLIN, utc(2026, 6, 21, 17, 0));
        assert!(
            morning.azimuth_degrees > 45.0 && morning.azimuth_degrees < 110.0,
            "{morning:?}"
        );
        assert!(
            evening.azimuth_degrees > 250.0 && evening.azimuth_degrees < 315.0,
            "{evening:?}"
        );
    }

    #[test]
    fn sunrise_matches_published_times_within_two_minutes() {
        // Berlin 2026-06-21: sunrise 04:43 CEST = 02:43 UTC (timeanddate.com).
        let rise = next_sunrise(BERLIN, utc(2026, 6, 20, 22, 0)).unwrap();
        let expected = utc(2026, 6, 21, 2, 43);
        assert!((rise - expected).num_seconds().abs() <= 120, "{rise}");
        // Kampala 2026-03-20: solar noon 09:57 UTC (32.58° E, equation of time -7.5 min); an equinox
        // day at the equator lasts 12 h 7 min with refraction, so sunrise is about 03:54 UTC.
        let rise = next_sunrise(KAMPALA, utc(2026, 3, 19, 18, 0)).unwrap();
        let expected = utc(2026, 3, 20, 3, 54);
        assert!((rise - expected).num_seconds().abs() <= 180, "{rise}");
    }

    #[test]
    fn there_is_no_sunrise_in_polar_day() {
        let tromso_summer = Place {
            latitude: 69.65,
            longitude: 18.96,
        };
        assert_eq!(next_sunrise(tromso_summer, utc(2026, 6, 21, 0, 0)), None);
    }

    #[test]
    fn clear_sky_power_peaks_near_rated_power_and_is_zero_at_night() {
        let arrays = [Array {
            kwp: 12.0,
            tilt_degrees: 10.0,
            azimuth_degrees: 0.0,
        }];
        let noon = clear_sky_watts(KAMPALA, &arrays, utc(2026, 3, 20, 9, 57));
        assert!(noon > 8_500.0 && noon < 11_000.0, "{noon}");
        assert_eq!(
            clear_sky_watts(KAMPALA, &arrays, utc(2026, 3, 20, 21, 0)),
            0.0
        );
    }

    #[test]
    fn an_east_facing_array_produces_more_in_the_morning_than_in_the_afternoon() {
        let east = [Array {
            kwp: 1.0,
            tilt_degrees: 30.0,
            azimuth_degrees: 90.0,
        }];
        let am = clear_sky_watts(BERLIN, &east, utc(2026, 6, 21, 7, 0));
        let pm = clear_sky_watts(BERLIN, &east, utc(2026, 6, 21, 15, 0));
        assert!(am > 1.5 * pm, "am {am} pm {pm}");
    }

    #[test]
    fn calibration_follows_measured_over_clear_sky_and_forgets_old_samples() {
        let mut c = Calibration::new(Duration::hours(3));
        assert_eq!(c.factor(10_000.0), None, "no data, no factor");
        let start = utc(2026, 3, 20, 6, 0);
        for m in 0..120 {
            c.record(start + Duration::minutes(m), Some(3_000.0), 6_000.0);
        }
        assert!((c.factor(10_000.0).unwrap() - 0.5).abs() < 1e-9);
        // Silence says nothing: the factor does not move.
        for m in 120..150 {
            c.record(start + Duration::minutes(m), None, 6_000.0);
        }
        assert!((c.factor(10_000.0).unwrap() - 0.5).abs() < 1e-9);
        // Clear skies for three hours replace the cloudy morning.
        for m in 150..400 {
            c.record(start + Duration::minutes(m), Some(6_000.0), 6_000.0);
        }
        assert!((c.factor(10_000.0).unwrap() - 1.0).abs() < 1e-9);
        assert!(
            c.samples.len() <= 181,
            "one sample per minute over the window"
        );
    }

    #[test]
    fn samples_far_apart_count_for_the_minutes_between_them() {
        // Cycles 7.5 site minutes apart (accelerated time, or a slow board): 45 minutes of a
        // fifth of peak is enough sun to say, as it is with a sample every minute.
        let (mut sparse, mut dense) = (
            Calibration::new(Duration::hours(2)),
            Calibration::new(Duration::hours(2)),
        );
        let start = utc(2026, 3, 20, 7, 0);
        for s in 0..7 {
            sparse.record(start + Duration::seconds(450 * s), Some(1_000.0), 2_000.0);
        }
        for m in 0..46 {
            dense.record(start + Duration::minutes(m), Some(1_000.0), 2_000.0);
        }
        assert!((dense.factor(10_000.0).unwrap() - 0.5).abs() < 1e-9);
        assert!((sparse.factor(10_000.0).unwrap() - 0.5).abs() < 1e-9);
        // A long silence in between counts for at most a quarter hour.
        let mut gap = Calibration::new(Duration::hours(3));
        gap.record(start, Some(0.0), 2_000.0);
        gap.record(start + Duration::hours(2), Some(2_000.0), 2_000.0);
        let f = gap.factor(100.0).unwrap();
        assert!((f - 15.0 / 16.0).abs() < 1e-9, "{f}");
    }

    #[test]
    fn the_forecast_fades_from_the_recent_factor_to_the_typical_one() {
        let arrays = [Array {
            kwp: 10.0,
            tilt_degrees: 0.0,
            azimuth_degrees: 180.0,
        }];
        let start = utc(2026, 3, 20, 6, 0);
        let steps = Steps {
            start,
            step: Duration::minutes(15),
            steps: 96,
        };
        let scaling = Scaling {
            recent: Some(0.2),
            typical: 0.8,
            fade: Duration::hours(4),
        };
        let f = pv_forecast(KAMPALA, &arrays, steps, scaling);
        assert_eq!(f.len(), 96);
        let clear = |i: i64| {
            clear_sky_watts(
                KAMPALA,
                &arrays,
                start + Duration::minutes(15 * i + 7) + Duration::seconds(30),
            )
        };
        // First step: almost all recent factor; after the fade: the typical one.
        assert!((f[0] / clear(0) - 0.2).abs() < 0.05, "{}", f[0] / clear(0));
        assert!((f[20] / clear(20) - 0.8).abs() < 1e-9);
        assert!(f.iter().all(|w| *w >= 0.0));
    }
}
