//! Every validation rule, with its exact message and position.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use communalia_config::{Config, Control, Sharing, TimeOfDay};

const SITE: &str = r#"[site]
id = "t"
name = "Test site"
assembly = "assembly.toml"

[mqtt]
broker = "127.0.0.1:1883"

[battery]
device = "bat"
capacity_wh = 10000
max_charge_watts = 3000
max_discharge_watts = 3000

[[devices]]
kind = "sunspec"
id = "bat"
address = "127.0.0.1:5021"
role = "battery"

[[loads]]
id = "fridge"
name = "Fridge"
service = "clinic"
nominal_watts = 100
control = { kind = "tasmota", topic = "fridge" }

[[loads]]
id = "lamp"
name = "Lamp"
member = "ana"
nominal_watts = 20
control = { kind = "shelly", device_id = "lamp" }
"#;

const ASSEMBLY: &str = r#"[decision]
date = 2026-01-01
reference = "minutes 1"
quorum = 3
present = 4
votes_for = 3
votes_against = 1

[[tiers]]
name = "health"
loads = ["fridge"]

[[tiers]]
name = "homes"
loads = ["lamp"]
"#;

fn load(site: &str, assembly: &str) -> Result<Config, Vec<String>> {
    let assembly = assembly.to_owned();
    communalia_config::load("site.toml", site.as_bytes().to_vec(), move |name: &str| {
        assert_eq!(name, "assembly.toml");
        Ok(("assembly.toml".to_owned(), assembly.as_bytes().to_vec()))
    })
    .map_err(|d| d.iter().map(ToString::to_string).collect())
}

fn errors(site: &str, assembly: &str) -> Vec<String> {
    match load(site, assembly) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

fn site_with(from: &str, to: &str) -> String {
    assert!(SITE.contains(from), "test bug: {from:?} not in SITE");
    SITE.replacen(from, to, 1)
}

fn assembly_with(from: &str, to: &str) -> String {
    assert!(
        ASSEMBLY.contains(from),
        "test bug: {from:?} not in ASSEMBLY"
    );
    ASSEMBLY.replacen(from, to, 1)
}

#[test]
fn the_base_files_are_valid_and_lowered() {
    let config = load(SITE, ASSEMBLY).unwrap();
    assert_eq!(config.site.id, "t");
    assert_eq!(config.site.loads.len(), 2);
    assert_eq!(config.assembly.tiers[0].sharing, Sharing::FairShare);
    assert_eq!(config.assembly.rank_of("lamp"), Some(2));
    assert_eq!(config.site.mqtt.as_ref().unwrap().client_id, "communalia-t");
    assert_eq!(config.site.interval, std::time::Duration::from_secs(2));
    assert_eq!(config.site.http.listen.to_string(), "127.0.0.1:8080");
    assert!(matches!(
        config.site.loads[0].control,
        Control::Tasmota { relay: 1, .. }
    ));
    assert_eq!(config.assembly.communs.account_ceiling_millis, 500_000);
}

#[test]
fn unknown_keys_are_reported_each_with_a_suggestion_when_close() {
    let site = site_with(
        "nominal_watts = 100\n",
        "nominal_watts = 100\nnominal_wats = 1\ncolour = \"red\"\n",
    );
    let site = site.replacen("[mqtt]\n", "[mqtt]\nbrokr = \"x:1\"\n", 1);
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:7:1: mqtt.brokr: unknown key `brokr`; did you mean `broker`?",
            "site.toml:27:1: loads[1].nominal_wats: unknown key `nominal_wats`; did you mean `nominal_watts`?",
            "site.toml:28:1: loads[1].colour: unknown key `colour` (known keys here: id, name, member, service, nominal_watts, flexible, daily_energy_wh, deadline, control)",
        ]
    );
}

#[test]
fn unknown_top_level_tables_are_reported() {
    let assembly = format!("{ASSEMBLY}\n[prioritys]\nx = 1\n");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:17:2: prioritys: unknown key `prioritys` (known keys here: decision, tiers, health_reserve, communs)"
        ]
    );
}

#[test]
fn duplicate_ids_point_at_the_second_and_name_the_first() {
    let site = site_with("id = \"lamp\"", "id = \"fridge\"");
    let errs = errors(&site, ASSEMBLY);
    assert!(
        errs.contains(
            &"site.toml:29:6: loads[2].id: duplicate load id \"fridge\" (first defined on line 22)"
                .to_owned()
        ),
        "{errs:#?}"
    );
    let dev = format!(
        "{SITE}\n[[devices]]\nkind = \"sdm630\"\nid = \"bat\"\naddress = \"127.0.0.1:502\"\n"
    );
    assert_eq!(
        errors(&dev, ASSEMBLY),
        vec![
            "site.toml:37:6: devices[2].id: duplicate device id \"bat\" (first defined on line 17)"
        ]
    );
}

#[test]
fn a_tier_naming_an_unknown_load_is_located_at_the_name() {
    let assembly = assembly_with("loads = [\"lamp\"]", "loads = [\"lamp\", \"pump2\"]");
    assert_eq!(
        errors(SITE, &assembly),
        vec!["assembly.toml:15:18: tiers[2].loads[2]: unknown load \"pump2\""]
    );
    let assembly = assembly_with("loads = [\"lamp\"]", "loads = [\"lamps\"]");
    let errs = errors(SITE, &assembly);
    assert_eq!(
        errs[0],
        "assembly.toml:15:10: tiers[2].loads[1]: unknown load \"lamps\"; did you mean \"lamp\"?"
    );
}

#[test]
fn a_load_in_two_tiers_is_an_error() {
    let assembly = assembly_with("loads = [\"lamp\"]", "loads = [\"lamp\", \"fridge\"]");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:15:18: tiers[2].loads[2]: load \"fridge\" is already in tier \"health\" (tiers[1]); a load has one place"
        ]
    );
}

#[test]
fn a_controlled_load_in_no_tier_is_an_error_in_the_site_file() {
    let assembly = assembly_with("loads = [\"lamp\"]\n", "loads = [\"fridge\"]\n").replacen(
        "loads = [\"fridge\"]\n",
        "loads = [\"lamp\"]\n",
        1,
    );
    assert!(
        errors(SITE, &assembly).is_empty(),
        "swapping places is fine"
    );
    let assembly = ASSEMBLY.replacen("\n[[tiers]]\nname = \"homes\"\nloads = [\"lamp\"]\n", "", 1);
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "site.toml:29:6: loads[2].id: load \"lamp\" has no tier in assembly.toml; every controlled load needs a voted place"
        ]
    );
}

#[test]
fn a_measured_only_load_needs_no_tier_and_may_not_have_one() {
    let site = format!(
        "{SITE}\n[[loads]]\nid = \"mast\"\nname = \"Mast\"\nservice = \"telecom\"\nnominal_watts = 200\ncontrol = {{ kind = \"measured_only\" }}\n"
    );
    assert!(errors(&site, ASSEMBLY).is_empty());
    let assembly = assembly_with("loads = [\"lamp\"]", "loads = [\"lamp\", \"mast\"]");
    assert_eq!(
        errors(&site, &assembly),
        vec![
            "assembly.toml:15:18: tiers[2].loads[2]: load \"mast\" is measured only: it cannot be switched, so it has no place in a tier"
        ]
    );
}

#[test]
fn empty_tiers_and_duplicate_tier_names_are_errors() {
    let assembly = format!("{ASSEMBLY}\n[[tiers]]\nname = \"homes\"\nloads = []\n");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:18:8: tiers[3].name: duplicate tier name \"homes\" (first defined on line 14)",
            "assembly.toml:19:9: tiers[3].loads: tier \"homes\" is empty: list at least one load",
        ]
    );
    let no_tiers = ASSEMBLY.split("[[tiers]]").next().unwrap();
    let errs = errors(SITE, no_tiers);
    assert_eq!(
        errs[0],
        "assembly.toml:1:1: no [[tiers]]: the assembly file must list at least one tier"
    );
}

#[test]
fn watts_must_be_positive() {
    let site = site_with("nominal_watts = 100", "nominal_watts = -100");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:25:17: loads[1].nominal_watts: must be a positive number of watts, not -100"
        ]
    );
    let site = site_with("nominal_watts = 20", "nominal_watts = 0");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec!["site.toml:32:17: loads[2].nominal_watts: must be a positive number of watts, not 0"]
    );
    let site = site_with("max_charge_watts = 3000", "max_charge_watts = 0");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:12:20: battery.max_charge_watts: must be a positive number of watts, not 0"
        ]
    );
}

#[test]
fn plugs_without_an_mqtt_broker_are_errors() {
    let site = site_with("[mqtt]\nbroker = \"127.0.0.1:1883\"\n", "");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:24:20: loads[1].control.kind: a tasmota load is driven over MQTT, but this site file has no [mqtt] table with a broker",
            "site.toml:31:20: loads[2].control.kind: a shelly load is driven over MQTT, but this site file has no [mqtt] table with a broker",
        ]
    );
}

#[test]
fn a_health_reserve_larger_than_the_battery_is_an_error() {
    let assembly = format!("{ASSEMBLY}\n[health_reserve]\nmin_wh = 9500\n");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:18:10: health_reserve.min_wh: a health reserve of 9500 Wh is larger than the battery's usable 9000 Wh (capacity_wh 10000 between 10 % and 100 %)"
        ]
    );
    let assembly = format!("{ASSEMBLY}\n[health_reserve]\nmin_wh = 9000\n");
    assert!(
        errors(SITE, &assembly).is_empty(),
        "exactly the usable energy fits"
    );
    let no_battery = site_with(
        "[battery]\ndevice = \"bat\"\ncapacity_wh = 10000\nmax_charge_watts = 3000\nmax_discharge_watts = 3000\n",
        "",
    );
    let assembly = format!("{ASSEMBLY}\n[health_reserve]\nmin_wh = 100\n");
    assert_eq!(
        errors(&no_battery, &assembly),
        vec![
            "assembly.toml:18:10: health_reserve.min_wh: a health reserve of 100 Wh needs a [battery] in the site file"
        ]
    );
}

#[test]
fn demurrage_rate_and_account_ceiling_must_be_in_range() {
    let assembly =
        format!("{ASSEMBLY}\n[communs]\ndemurrage_percent_per_year = 75\naccount_ceiling = 0\n");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:18:30: communs.demurrage_percent_per_year: 75 is out of range: must be from 0 % to 50 %",
            "assembly.toml:19:19: communs.account_ceiling: 0 is out of range: must be from 1 C to 1000000 C",
        ]
    );
    let assembly = format!(
        "{ASSEMBLY}\n[communs]\ndemurrage_percent_per_year = -1\naccount_ceiling = 2000000\n"
    );
    assert_eq!(errors(SITE, &assembly).len(), 2);
    let assembly = format!("{ASSEMBLY}\n[communs]\naccount_ceiling = 10.0005\n");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:18:19: communs.account_ceiling: 10.0005 has more than three decimals; Communs count in thousandths"
        ]
    );
}

#[test]
fn a_deadline_must_be_a_time_of_day() {
    for bad in ["25:00", "8pm", "12:60", "24:01", "7:5", ""] {
        let site = site_with(
            "nominal_watts = 20\n",
            &format!("nominal_watts = 20\ndaily_energy_wh = 500\ndeadline = \"{bad}\"\n"),
        );
        assert_eq!(
            errors(&site, ASSEMBLY),
            vec![format!(
                "site.toml:34:12: loads[2].deadline: \"{bad}\" is not a time of day; write it as HH:MM, from 00:00 to 24:00"
            )],
            "deadline {bad:?}"
        );
    }
    let site = site_with(
        "nominal_watts = 20\n",
        "nominal_watts = 20\ndaily_energy_wh = 500\ndeadline = \"7:30\"\n",
    );
    let config = load(&site, ASSEMBLY).unwrap();
    let need = config.site.loads[1].daily_need.unwrap();
    assert_eq!(need.deadline, TimeOfDay { minutes: 450 });
    assert!(
        config.site.loads[1].flexible,
        "a load with a daily need can wait"
    );
    let site = site_with(
        "nominal_watts = 20\n",
        "nominal_watts = 20\ndeadline = \"07:30\"\n",
    );
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:33:12: loads[2].deadline: a deadline needs a daily energy need; add `daily_energy_wh`"
        ]
    );
}

#[test]
fn an_unknown_device_kind_lists_the_kinds() {
    let site = site_with("kind = \"sunspec\"", "kind = \"modbus\"");
    let errs = errors(&site, ASSEMBLY);
    assert_eq!(
        errs,
        vec![
            "site.toml:16:8: devices[1].kind: unknown device kind \"modbus\" (expected one of: sunspec, sdm630, victron)"
        ]
    );
    let site = site_with(
        "control = { kind = \"tasmota\"",
        "control = { kind = \"tasmot\"",
    );
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:26:20: loads[1].control.kind: unknown control kind \"tasmot\" (expected one of: tasmota, shelly, setpoint, measured_only); did you mean \"tasmota\"?"
        ]
    );
}

#[test]
fn bad_socket_addresses_say_what_is_wrong() {
    let cases = [
        (
            "192.168.1.300:502",
            "\"192.168.1.300:502\" is not a socket address: \"192.168.1.300\" is not an IPv4 address",
        ),
        (
            "127.0.0.1",
            "\"127.0.0.1\" is not a socket address: missing port; write it as host:port, for example 192.168.1.20:502",
        ),
        (
            "127.0.0.1:70000",
            "\"127.0.0.1:70000\" is not a socket address: port \"70000\" must be a number from 1 to 65535",
        ),
        (
            "inverter_1:502",
            "\"inverter_1:502\" is not a socket address: \"inverter_1\" is not a valid host name",
        ),
        (
            "::1:502",
            "\"::1:502\" is not a socket address: put IPv6 addresses in brackets, as [::1]:502",
        ),
    ];
    for (addr, message) in cases {
        let site = site_with(
            "address = \"127.0.0.1:5021\"",
            &format!("address = \"{addr}\""),
        );
        assert_eq!(
            errors(&site, ASSEMBLY),
            vec![format!("site.toml:18:11: devices[1].address: {message}")]
        );
    }
    for good in ["inverter.local:502", "[::1]:502", "10.0.0.7:1502"] {
        let site = site_with(
            "address = \"127.0.0.1:5021\"",
            &format!("address = \"{good}\""),
        );
        assert!(
            errors(&site, ASSEMBLY).is_empty(),
            "{good} is a good address"
        );
    }
}

#[test]
fn wrong_types_are_located_at_the_value() {
    let site = site_with("nominal_watts = 100", "nominal_watts = \"100\"");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:25:17: loads[1].nominal_watts: invalid type: string \"100\", expected a number"
        ]
    );
    let site = site_with("role = \"battery\"", "role = \"battery\"\nunit_id = 300");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:20:11: devices[1].unit_id: invalid value: whole number `300`, expected a whole number from 0 to 255"
        ]
    );
}

#[test]
fn syntax_errors_are_located() {
    let errs = errors("[site]\nid = \"t\nname = 1\n", ASSEMBLY);
    assert_eq!(errs.len(), 1, "{errs:?}");
    // toml points where the closing quote was expected: the end of line 2.
    assert_eq!(
        errs[0],
        "site.toml:2:8: syntax error: invalid basic string, expected `\"`"
    );
}

#[test]
fn a_missing_assembly_file_is_reported_at_the_key_that_names_it() {
    let errs = communalia_config::load("site.toml", SITE.as_bytes().to_vec(), |_: &str| {
        Err("no such file".to_owned())
    })
    .unwrap_err()
    .iter()
    .map(ToString::to_string)
    .collect::<Vec<_>>();
    assert_eq!(
        errs,
        vec![
            "site.toml:4:12: site.assembly: cannot read assembly file \"assembly.toml\": no such file"
        ]
    );
}

#[test]
fn every_mistake_in_both_files_is_reported_in_one_run() {
    let site = site_with("nominal_watts = 100", "nominal_watts = 0")
        .replacen("address = \"127.0.0.1:5021\"", "address = \"bad\"", 1)
        .replacen("[site]\n", "[site]\ncolor = 1\n", 1);
    let assembly = assembly_with("loads = [\"lamp\"]", "loads = [\"lamp\", \"nope\"]").replacen(
        "present = 4",
        "present = 2",
        1,
    );
    let errs = errors(&site, &assembly);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    // Sorted by file, then position.
    assert!(errs[0].starts_with(
        "assembly.toml:5:11: decision.present: 2 members present is below the quorum of 3"
    ));
    assert!(errs[1].starts_with("assembly.toml:6:13: decision.votes_for: 4 votes and abstentions, but only 2 members present"));
    assert!(errs[2].starts_with("assembly.toml:15:18: tiers[2].loads[2]: unknown load \"nope\""));
    assert!(errs[3].starts_with("site.toml:2:1: site.color: unknown key `color`"));
    assert!(errs[4].starts_with("site.toml:19:11: devices[1].address:"));
    assert!(errs[5].starts_with("site.toml:26:17: loads[1].nominal_watts:"));
}

#[test]
fn the_decision_record_must_show_a_valid_vote() {
    let assembly = assembly_with("votes_for = 3", "votes_for = 1");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:6:13: decision.votes_for: 1 for and 1 against: the record shows the motion was not carried"
        ]
    );
    let assembly = assembly_with("votes_against = 1", "votes_against = 1\nabstentions = 3");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:6:13: decision.votes_for: 7 votes and abstentions, but only 4 members present"
        ]
    );
    let assembly = assembly_with("date = 2026-01-01", "date = \"2026-02-29\"");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:2:8: decision.date: \"2026-02-29\" is not a date; write it as YYYY-MM-DD"
        ]
    );
}

#[test]
fn a_page_open_to_other_machines_must_be_meant_and_protected() {
    let site = format!("{SITE}\n[http]\nlisten = \"0.0.0.0:8080\"\n");
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:36:10: http.listen: 0.0.0.0:8080 is reachable from other machines; set `allow_remote = true` to mean it"
        ]
    );
    let site = format!(
        "{SITE}\n[http]\nlisten = \"0.0.0.0:8080\"\nallow_remote = true\nwrite_token_file = \"token\"\n"
    );
    assert!(errors(&site, ASSEMBLY).is_empty());
}

#[test]
fn a_reloaded_assembly_file_is_checked_against_the_running_site() {
    let config = load(SITE, ASSEMBLY).unwrap();
    let good = assembly_with("loads = [\"fridge\"]", "loads = [\"fridge\", \"lamp\"]").replacen(
        "\n[[tiers]]\nname = \"homes\"\nloads = [\"lamp\"]\n",
        "",
        1,
    );
    let a = communalia_config::load_assembly(&config.site, "new.toml", good.into_bytes()).unwrap();
    assert_eq!(a.tiers.len(), 1);
    let bad = ASSEMBLY.replacen("\n[[tiers]]\nname = \"homes\"\nloads = [\"lamp\"]\n", "", 1);
    let errs: Vec<String> =
        communalia_config::load_assembly(&config.site, "new.toml", bad.into_bytes())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(
        errs,
        vec![
            "new.toml:9:1: tiers: load \"lamp\" has no tier in new.toml; every controlled load needs a voted place"
        ]
    );
}

#[test]
fn a_wrong_type_under_an_optional_key_does_not_hide_the_entrys_other_mistakes() {
    let site = site_with(
        "nominal_watts = 20\n",
        "nominal_watts = 20\nflexible = \"yes\"\ndaily_energy_wh = 500\ndeadline = \"25:00\"\n",
    );
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:33:12: loads[2].flexible: invalid type: string \"yes\", expected true or false",
            "site.toml:35:12: loads[2].deadline: \"25:00\" is not a time of day; write it as HH:MM, from 00:00 to 24:00",
        ]
    );
    let site = site_with(
        "role = \"battery\"",
        "role = \"battery\"\nunit_id = 300\ntimeout_ms = \"fast\"",
    )
    .replacen("address = \"127.0.0.1:5021\"", "address = \"127.0.0.1\"", 1);
    let errs = errors(&site, ASSEMBLY);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("site.toml:18:11: devices[1].address:"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("site.toml:20:11: devices[1].unit_id: invalid value"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("site.toml:21:14: devices[1].timeout_ms: invalid type"),
        "{errs:#?}"
    );
}

#[test]
fn a_forecast_table_needs_a_source_and_a_topic_without_wildcards() {
    let site = format!("{SITE}\n[forecast]\npv_topic = \"ha/pv/#\"\n");
    let errors = load(&site, ASSEMBLY).unwrap_err();
    assert_eq!(
        errors,
        vec![
            "site.toml:36:12: forecast.pv_topic: the forecast topic is one topic, without the MQTT wildcards `#` or `+`"
        ]
    );
    let site = format!("{SITE}\n[forecast]\n");
    let errors = load(&site, ASSEMBLY).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("[forecast] needs `pv_file` or `pv_topic`"),
        "{errors:?}"
    );
    let site = format!("{SITE}\n[forecast]\npv_file = \"pv.json\"\n");
    let config = load(&site, ASSEMBLY).unwrap();
    assert_eq!(
        config.site.forecast.unwrap().pv_file.as_deref(),
        Some("pv.json")
    );
}

#[test]
fn a_tasmota_tele_period_is_kept_unless_set_and_must_be_one_tasmota_accepts() {
    let config = load(SITE, ASSEMBLY).unwrap();
    assert!(matches!(
        config.site.loads[0].control,
        Control::Tasmota {
            tele_period_secs: None,
            ..
        }
    ));
    let site = site_with(
        r#"topic = "fridge" }"#,
        r#"topic = "fridge", tele_period_secs = 10 }"#,
    );
    assert!(matches!(
        load(&site, ASSEMBLY).unwrap().site.loads[0].control,
        Control::Tasmota {
            tele_period_secs: Some(10),
            ..
        }
    ));
    let site = site_with(
        r#"topic = "fridge" }"#,
        r#"topic = "fridge", tele_period_secs = 5 }"#,
    );
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:26:68: loads[1].control.tele_period_secs: 5 is not a Tasmota TelePeriod: use 0 (telemetry off) or 10 to 3600 seconds"
        ]
    );
}

#[test]
fn the_minimum_switching_time_defaults_to_none_and_must_be_in_range() {
    assert_eq!(
        load(SITE, ASSEMBLY).unwrap().site.min_switch,
        std::time::Duration::ZERO
    );
    let site = site_with(
        "assembly = \"assembly.toml\"\n",
        "assembly = \"assembly.toml\"\nmin_switch_secs = 300\n",
    );
    assert_eq!(
        load(&site, ASSEMBLY).unwrap().site.min_switch,
        std::time::Duration::from_secs(300)
    );
    let site = site_with(
        "assembly = \"assembly.toml\"\n",
        "assembly = \"assembly.toml\"\nmin_switch_secs = -5\n",
    );
    assert_eq!(
        errors(&site, ASSEMBLY),
        vec![
            "site.toml:5:19: site.min_switch_secs: -5 is out of range: must be from 0 s to 3600 s"
        ]
    );
}

#[test]
fn the_forecast_share_is_a_percentage_and_defaults_to_thirty() {
    let assembly = format!("{ASSEMBLY}\n[health_reserve]\nforecast_share_percent = 120\n");
    assert_eq!(
        errors(SITE, &assembly),
        vec![
            "assembly.toml:18:26: health_reserve.forecast_share_percent: 120 is out of range: must be from 0 % to 100 %"
        ]
    );
    let assembly = format!("{ASSEMBLY}\n[health_reserve]\nforecast_share_percent = -5\n");
    assert_eq!(errors(SITE, &assembly).len(), 1);
    for (text, share) in [
        ("[health_reserve]\nforecast_share_percent = 0\n", 0.0),
        ("[health_reserve]\nmin_wh = 0\n", 30.0),
    ] {
        let assembly = format!("{ASSEMBLY}\n{text}");
        let config = load(SITE, &assembly).expect("a valid assembly");
        assert_eq!(
            config.assembly.health_reserve.forecast_share.0, share,
            "{text}"
        );
    }
}

#[test]
fn two_loads_on_one_plug_are_refused_with_both_places() {
    // Issue 20: two loads on one topic passed `check`; under scarcity the shared plug flipped
    // off and on every cycle while the page said "on, served".
    let twice = format!(
        "{SITE}\n[[loads]]\nid = \"freezer\"\nname = \"Freezer\"\nservice = \"clinic\"\nnominal_watts = 80\ncontrol = {{ kind = \"tasmota\", topic = \"fridge\" }}\n"
    );
    let assembly = assembly_with(r#"loads = ["fridge"]"#, r#"loads = ["fridge", "freezer"]"#);
    assert_eq!(
        errors(&twice, &assembly),
        vec![
            "site.toml:40:39: loads[3].control.topic: duplicate plug \"fridge relay 1\" (first defined on line 26)"
        ]
    );
    // Another relay of the same device is another plug; so is another Shelly channel.
    let relay2 = twice.clone();
    let last = relay2.rfind("topic = \"fridge\" }").unwrap();
    let relay2 = format!(
        "{}topic = \"fridge\", relay = 2 }}{}",
        &relay2[..last],
        &relay2[last + "topic = \"fridge\" }".len()..]
    );
    assert_eq!(errors(&relay2, &assembly), Vec::<String>::new());
    let shelly = format!(
        "{SITE}\n[[loads]]\nid = \"lamp2\"\nname = \"Lamp 2\"\nmember = \"ana\"\nnominal_watts = 20\ncontrol = {{ kind = \"shelly\", device_id = \"lamp\" }}\n"
    );
    let assembly = assembly_with(r#"loads = ["lamp"]"#, r#"loads = ["lamp", "lamp2"]"#);
    assert_eq!(
        errors(&shelly, &assembly),
        vec![
            "site.toml:40:42: loads[3].control.device_id: duplicate plug \"lamp switch:0\" (first defined on line 33)"
        ]
    );
}

#[test]
fn an_influxdb_url_over_tls_is_refused_rather_than_sent_in_clear() {
    let table = |url: &str| {
        format!(
            "{SITE}\n[influxdb]\nurl = \"{url}\"\norg = \"village\"\nbucket = \"energy\"\ntoken_env = \"T\"\n"
        )
    };
    let errors = load(&table("https://influx.example:8086"), ASSEMBLY).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("site.toml:36:7: influxdb.url: \"https://influx.example:8086\": this build writes to InfluxDB over plain http:// only"),
        "{errors:?}"
    );
    let errors = load(&table("influx:8086"), ASSEMBLY).unwrap_err();
    assert_eq!(
        errors,
        vec!["site.toml:36:7: influxdb.url: \"influx:8086\" is not an http:// URL"]
    );
    let config = load(&table("http://127.0.0.1:8086"), ASSEMBLY).unwrap();
    assert_eq!(config.site.influxdb.unwrap().url, "http://127.0.0.1:8086");
}
