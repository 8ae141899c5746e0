//! The lowered configuration: typed domain values, every reference resolved and every range checked.
//!
//! Nothing here can be out of range or dangle: a `Config` exists only when both files validated.
//! Units are in the types (`Watts`, `WattHours`, `Percent`) or in the field names.

use std::fmt;
use std::time::Duration;

/// Power in watts.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
pub struct Watts(pub f64);

/// Energy in watt-hours.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
pub struct WattHours(pub f64);

/// A percentage, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
pub struct Percent(pub f64);

impl Percent {
    /// The same share as a fraction (50 % is 0.5): the planner's state of charge and every
    /// ratio the controller computes with. (The one place the factor 100 is written.)
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }

    /// A fraction (0.5) as a percentage (50 %).
    pub fn of_fraction(fraction: f64) -> Self {
        Self(fraction * 100.0)
    }
}

/// A local time of day, minutes since midnight (0..=1440; 24:00 is the end of the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TimeOfDay {
    pub minutes: u16,
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// A network endpoint: an IP literal or a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// True for 127.0.0.0/8, ::1 and `localhost`.
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host.eq_ignore_ascii_case("localhost"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A site file and its assembly file, validated together.
#[derive(Debug, Clone)]
pub struct Config {
    pub site: Site,
    pub assembly: Assembly,
}

/// The site: its devices, loads and services.
#[derive(Debug, Clone)]
pub struct Site {
    /// Short slug used in MQTT topics and as the ledger's domain (`[a-z0-9_-]`).
    pub id: String,
    pub name: String,
    /// The assembly file as named in the site file (relative to the site file's folder).
    pub assembly_file: String,
    pub interval: Duration,
    /// Least time a load of a `fair_share` tier stays in the state rotation switched it to.
    pub min_switch: Duration,
    pub location: Option<Location>,
    pub utc_offset_minutes: i32,
    pub grid: Option<Grid>,
    pub battery: Option<Battery>,
    pub mqtt: Option<Mqtt>,
    pub http: Http,
    pub influxdb: Option<Influxdb>,
    /// An external PV forecast that takes precedence over the local solar model.
    pub forecast: Option<ForecastFeed>,
    pub ledger: Ledger,
    pub devices: Vec<Device>,
    pub pv_arrays: Vec<PvArray>,
    pub loads: Vec<Load>,
}

impl Site {
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    pub fn load(&self, id: &str) -> Option<&Load> {
        self.loads.iter().find(|l| l.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridKind {
    Grid,
    Generator,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub kind: GridKind,
    pub max_import: Watts,
    pub max_export: Watts,
    pub import_price_per_kwh: Option<f64>,
    pub export_price_per_kwh: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Battery {
    /// Id of the device that reads and drives it.
    pub device: String,
    pub capacity: WattHours,
    pub min_soc: Percent,
    pub max_soc: Percent,
    pub max_charge: Watts,
    pub max_discharge: Watts,
    pub charge_efficiency: f64,
    pub discharge_efficiency: f64,
}

impl Battery {
    /// Energy between the minimum and maximum state of charge.
    pub fn usable(&self) -> WattHours {
        WattHours(self.capacity.0 * (self.max_soc.fraction() - self.min_soc.fraction()))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    pub broker: Endpoint,
    pub client_id: String,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub tls: bool,
    pub ca_file: Option<String>,
    pub keep_alive: Duration,
    /// Topic prefix under which Home Assistant discovers the site's sensors (usually
    /// `homeassistant`); `None`: no discovery.
    pub home_assistant_discovery: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub listen: Endpoint,
    pub write_token_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    File(String),
    Env(String),
}

/// Where an external PV forecast comes from (e.g. written by Home Assistant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForecastFeed {
    /// A JSON file, re-read when it changes.
    pub pv_file: Option<String>,
    /// An MQTT topic carrying the same JSON.
    pub pv_topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Influxdb {
    pub url: String,
    pub org: String,
    pub bucket: String,
    pub token: Token,
    pub batch_points: u32,
    pub buffer_dir: String,
    pub buffer_max_points: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    pub database: String,
    pub controller_key_file: String,
}

/// What a meter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measures {
    /// The site's own consumption (positive = consuming).
    Consumption,
    /// The grid or generator connection (positive = importing).
    Grid,
    /// PV production not read from an inverter.
    Pv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SunspecRole {
    PvInverter,
    Battery,
    Meter(Measures),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceKind {
    /// SunSpec over Modbus TCP; `base_address` None means discover (40000, 0, 50000).
    Sunspec {
        role: SunspecRole,
        base_address: Option<u16>,
    },
    /// Eastron SDM630 three-phase meter.
    Sdm630 { measures: Measures },
    /// Victron GX (Venus OS) system: battery and PV as the GX reports them.
    Victron,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub kind: DeviceKind,
    pub address: Endpoint,
    pub unit_id: u8,
    pub timeout: Duration,
    pub stale_after: Duration,
}

impl Device {
    /// Whether the device reports PV production (an inverter, or a meter on the PV side).
    pub fn gives_pv(&self) -> bool {
        matches!(
            self.kind,
            DeviceKind::Sunspec {
                role: SunspecRole::PvInverter | SunspecRole::Meter(Measures::Pv),
                ..
            } | DeviceKind::Sdm630 {
                measures: Measures::Pv
            }
        )
    }

    /// Whether the device reports the battery.
    pub fn is_battery(&self) -> bool {
        matches!(
            self.kind,
            DeviceKind::Sunspec {
                role: SunspecRole::Battery,
                ..
            } | DeviceKind::Victron
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PvArray {
    pub inverter: String,
    pub kwp: f64,
    pub tilt_degrees: f64,
    pub azimuth_degrees: f64,
}

/// Who a load belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Member(String),
    Service(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Tasmota {
        topic: String,
        full_topic: String,
        relay: u8,
        /// `TelePeriod` the controller sets on the device (`None`: the device's own is kept).
        tele_period_secs: Option<u16>,
    },
    Shelly {
        device_id: String,
        switch_id: u8,
    },
    Setpoint {
        command_topic: String,
        state_topic: Option<String>,
        min: Watts,
        max: Watts,
    },
    MeasuredOnly,
}

impl Control {
    /// Whether the controller can act on the load (and so it needs a voted place).
    pub fn is_controlled(&self) -> bool {
        !matches!(self, Control::MeasuredOnly)
    }

    /// Whether the load is switched over MQTT.
    pub fn uses_mqtt(&self) -> bool {
        matches!(
            self,
            Control::Tasmota { .. } | Control::Shelly { .. } | Control::Setpoint { .. }
        )
    }
}

/// Energy a load needs each day, before a local time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyNeed {
    pub energy: WattHours,
    pub deadline: TimeOfDay,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub id: String,
    pub name: String,
    pub owner: Owner,
    pub nominal: Watts,
    pub flexible: bool,
    pub daily_need: Option<DailyNeed>,
    pub control: Control,
}

/// The assembly's decision: what it voted and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembly {
    pub decision: Decision,
    /// Highest priority first.
    pub tiers: Vec<Tier>,
    pub health_reserve: HealthReserve,
    pub communs: Communs,
}

impl Assembly {
    /// The tier rank (1 = highest) of a load, if it has a place.
    pub fn rank_of(&self, load: &str) -> Option<usize> {
        self.tiers
            .iter()
            .position(|t| t.loads.iter().any(|l| l == load))
            .map(|i| i + 1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub date: Date,
    pub reference: String,
    pub summary: Option<String>,
    pub quorum: u32,
    pub present: u32,
    pub votes_for: u32,
    pub votes_against: u32,
    pub abstentions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Adjustable loads get the same fraction of their demand; on/off loads take turns.
    FairShare,
    /// The listed order decides.
    InOrder,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    pub sharing: Sharing,
    /// Load ids, in the order the assembly listed them.
    pub loads: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthReserve {
    /// Index into `Assembly::tiers` of the tier the reserve protects.
    pub tier: usize,
    /// A floor kept back whatever the forecast says.
    pub min: WattHours,
    /// Added on top of the energy the tier needs until sunrise.
    pub margin: Percent,
    /// Share of the battery charge the forecast expects before sunset that the daytime
    /// reserve counts on (0: always the whole night).
    pub forecast_share: Percent,
}

/// Communs rates and rules, in whole milli-Communs where they are amounts.
#[derive(Debug, Clone, PartialEq)]
pub struct Communs {
    pub per_kwh_shifted_millis: i64,
    pub per_hour_maintenance_millis: i64,
    pub demurrage_percent_per_year: f64,
    pub account_ceiling_millis: i64,
    pub attestations_needed: u32,
    pub claim_expiry_days: u32,
    pub meter_credit_daily_cap_millis: i64,
    pub contest_days: u32,
    pub attester_daily_budget: u32,
}
