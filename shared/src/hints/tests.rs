use serde_json::{json, Value};

use super::*;

const GIB: u64 = 1 << 30;

fn hints(value: Value) -> RootDeviceHints {
    match RootDeviceHints::from_json(&value) {
        Ok(Some(h)) => h,
        other => panic!("{value} should parse to a non-empty hint set, got {other:?}"),
    }
}

fn parse_err(value: Value) -> HintError {
    match RootDeviceHints::from_json(&value) {
        Err(e) => e,
        Ok(h) => panic!("{value} should be rejected, parsed as {h:?}"),
    }
}

fn disk(name: &str, size_bytes: u64) -> HintDevice<'_> {
    HintDevice::new(name, size_bytes)
}

#[test]
fn size_operators() {
    let half = GIB / 2;
    // (hint value, device size in bytes, expected)
    let cases: &[(Value, u64, bool)] = &[
        // A bare number (JSON or string) is `==` against a float GiB count.
        (json!(100), 100 * GIB, true),
        (json!(100), 100 * GIB + half, false),
        (json!(100), 100 * GIB - 1, false),
        (json!("100"), 100 * GIB, true),
        (json!("100"), 100 * GIB + half, false),
        (json!("== 100"), 100 * GIB, true),
        (json!("== 100"), 101 * GIB, false),
        (json!("!= 100"), 101 * GIB, true),
        (json!("!= 100"), 100 * GIB, false),
        (json!(">= 100"), 100 * GIB + half, true),
        (json!(">= 100"), 100 * GIB, true),
        (json!(">= 100"), 99 * GIB + half, false),
        (json!(">=100"), 100 * GIB, true),
        (json!("> 100"), 100 * GIB + half, true),
        (json!("> 100"), 100 * GIB, false),
        (json!("<= 100"), 100 * GIB, true),
        (json!("<= 100"), 100 * GIB + 1, false),
        (json!("< 100"), 100 * GIB - 1, true),
        (json!("< 100"), 100 * GIB, false),
        // Legacy `=` means `>=`.
        (json!("= 100"), 150 * GIB, true),
        (json!("= 100"), 100 * GIB, true),
        (json!("= 100"), 99 * GIB, false),
        // Ranges: `[`/`]` inclusive, `(`/`)` exclusive, mixable.
        (json!("<range-in> [ 10 20 ]"), 10 * GIB, true),
        (json!("<range-in> [ 10 20 ]"), 20 * GIB, true),
        (json!("<range-in> [ 10 20 ]"), 10 * GIB - 1, false),
        (json!("<range-in> [ 10 20 ]"), 20 * GIB + half, false),
        (json!("<range-in> ( 10 20 )"), 10 * GIB, false),
        (json!("<range-in> ( 10 20 )"), 20 * GIB, false),
        (json!("<range-in> ( 10 20 )"), 15 * GIB, true),
        (json!("<range-in> [ 10 20 )"), 10 * GIB, true),
        (json!("<range-in> [ 10 20 )"), 20 * GIB, false),
        (json!("<range-in> ( 10 20 ]"), 10 * GIB, false),
        (json!("<range-in> ( 10 20 ]"), 20 * GIB, true),
        (json!("<range-in> [10 20]"), 15 * GIB, true),
        (json!("<RANGE-IN> [ 10 10 ]"), 10 * GIB, true),
    ];
    for (value, bytes, want) in cases {
        let h = hints(json!({ "size": value }));
        assert_eq!(
            h.matches(&disk("/dev/sda", *bytes)),
            *want,
            "size {value} against {bytes} bytes"
        );
    }
}

#[test]
fn legacy_equals_parses_as_at_least() {
    let h = hints(json!({"size": "= 50"}));
    assert_eq!(h.size, Some(SizeHint::Compare { op: NumericOp::Ge, gib: 50 }));
}

#[test]
fn string_operators() {
    // (hint key, hint value, device value, expected)
    let cases: &[(&str, &str, &str, bool)] = &[
        // No operator: case-insensitive exact match after trimming and quoting.
        ("model", "Samsung SSD", "samsung ssd", true),
        ("model", "Samsung SSD", " SAMSUNG SSD ", true),
        ("model", "Samsung SSD", "Samsung  SSD", false),
        ("model", "Samsung SSD", "Samsung SSD 860", false),
        // Quoting is applied to the hint too, so a pre-quoted hint is not a wildcard.
        ("model", "samsung%20ssd", "samsung ssd", false),
        ("model", "samsung%20ssd", "samsung%20ssd", true),
        ("vendor", "s== ATA", "ata", true),
        ("vendor", "S== ata", "ATA", true),
        ("vendor", "s==ata", "ata", true),
        ("vendor", "s== ata", "atax", false),
        ("vendor", "s!= intel", "samsung", true),
        ("vendor", "s!= intel", "INTEL", false),
        ("vendor", "s< m", "intel", true),
        ("vendor", "s< m", "samsung", false),
        ("vendor", "s<= intel", "Intel", true),
        ("vendor", "s<= intel", "samsung", false),
        ("vendor", "s> m", "samsung", true),
        ("vendor", "s> m", "intel", false),
        ("vendor", "s>= samsung", "samsung", true),
        ("vendor", "s>= samsung", "intel", false),
        ("model", "<in> ssd", "Samsung SSD 860", true),
        ("model", "<in> ssd", "Samsung HDD", false),
        ("model", "<in> SSD 860", "samsung ssd 860 evo", true),
        ("model", "<in> SSD 860", "samsung ssd 870 evo", false),
        ("model", "<or> intel <or> Samsung SSD", "samsung ssd", true),
        ("model", "<or> intel <or> Samsung SSD", "Intel", true),
        ("model", "<or> intel <or> Samsung SSD", "seagate", false),
        ("model", "<or> intel <or> Samsung SSD", "samsung", false),
        ("model", "<OR> intel", "intel", true),
        // Without a leading `<or>` the whole text is one literal value.
        ("model", "a <or> b", "a", false),
        ("model", "a <or> b", "A <OR> B", true),
        ("model", "<all-in> samsung 860", "Samsung SSD 860", true),
        ("model", "<all-in> samsung 860", "Samsung SSD 870", false),
        ("model", "<all-in> 860", "Samsung SSD 860", true),
        ("hctl", "1:0:0:0", "1:0:0:0", true),
        ("hctl", "1:0:0:0", "1:0:0:1", false),
        (
            "by_path",
            "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
            true,
        ),
        ("tran", "NVMe", "nvme", true),
        ("tran", "sata", "nvme", false),
        ("wwn_with_extension", "0x5000C500A1B2C3D4", "0x5000c500a1b2c3d4", true),
        ("wwn_vendor_extension", "0x1234", "0x1235", false),
        // `name` compares full paths; a bare name gets `/dev/` prepended.
        ("name", "/dev/sda", "/dev/sda", true),
        ("name", "/dev/sda", "/dev/sdb", false),
        ("name", "sda", "/dev/sda", true),
        ("name", "/DEV/SDA", "/dev/sda", true),
        ("name", "sda", "/dev/sdab", false),
        ("name", "<or> sda <or> /dev/sdb", "/dev/sdb", true),
        ("name", "<or> sda <or> /dev/sdb", "/dev/sda", true),
        ("name", "<or> sda <or> /dev/sdb", "/dev/sdc", false),
        ("name", "<in> sd", "/dev/sda", true),
        ("name", "<in> nvme", "/dev/sda", false),
        ("name", "s>= sdb", "/dev/sdc", true),
        ("name", "s>= sdb", "/dev/sda", false),
        ("name", "/dev/disk/by-id/wwn-0x5000", "/dev/disk/by-id/wwn-0x5000", true),
    ];
    for (key, value, device_value, want) in cases {
        let h = hints(json!({ *key: value }));
        let mut dev = disk("/dev/sda", 10 * GIB);
        let attr = AttrValues::One(device_value);
        match *key {
            "name" => dev.name = device_value,
            "model" => dev.model = attr,
            "vendor" => dev.vendor = attr,
            "hctl" => dev.hctl = attr,
            "by_path" => dev.by_path = attr,
            "tran" => dev.tran = attr,
            "wwn_with_extension" => dev.wwn_with_extension = attr,
            "wwn_vendor_extension" => dev.wwn_vendor_extension = attr,
            other => panic!("no device field wired for {other}"),
        }
        assert_eq!(h.matches(&dev), *want, "{key}: {value:?} against {device_value:?}");
    }
}

#[test]
fn multi_valued_attributes_match_if_any_value_matches() {
    let serials = vec!["ABC123".to_owned(), "XYZ789".to_owned()];
    let wwns = vec!["0x5000c500a1b2c3d4".to_owned()];
    let dev =
        HintDevice { serial: (&serials).into(), wwn: (&wwns).into(), ..disk("/dev/sda", 10 * GIB) };
    let cases = [
        (json!({"serial": "xyz789"}), true),
        (json!({"serial": "abc123"}), true),
        (json!({"serial": "def456"}), false),
        (json!({"serial": "<in> 789"}), true),
        (json!({"serial": "s!= abc123"}), true),
        (json!({"wwn": "0x5000C500A1B2C3D4"}), true),
        (json!({"wwn": "0x5000c500a1b2c3d5"}), false),
    ];
    for (value, want) in cases {
        assert_eq!(hints(value.clone()).matches(&dev), want, "{value}");
    }
}

#[test]
fn absent_or_empty_device_values_never_match() {
    let absent = disk("/dev/sda", 10 * GIB);
    let empty = HintDevice { model: AttrValues::One("  "), ..absent };
    for hint in ["samsung", "s!= samsung", "s< zzz", "<in> a"] {
        let h = hints(json!({ "model": hint }));
        assert!(!h.matches(&absent), "{hint:?} matched a device without a model");
        assert!(!h.matches(&empty), "{hint:?} matched a blank model");
    }
}

#[test]
fn rotational_accepts_bool_forms() {
    let truthy = [
        json!(true),
        json!("true"),
        json!("TRUE"),
        json!(" yes "),
        json!("y"),
        json!("t"),
        json!("on"),
        json!("1"),
        json!(1),
    ];
    let falsy = [
        json!(false),
        json!("false"),
        json!("False"),
        json!("no"),
        json!("n"),
        json!("f"),
        json!("OFF"),
        json!("0"),
        json!(0),
    ];
    for (forms, want) in [(&truthy, true), (&falsy, false)] {
        for value in forms {
            let h = hints(json!({ "rotational": value }));
            assert_eq!(h.rotational, Some(want), "rotational {value}");
        }
    }
    for bad in [
        json!("maybe"),
        json!(""),
        json!("true-ish"),
        json!(2),
        json!(1.5),
        json!(null),
        json!([true]),
    ] {
        let e = parse_err(json!({ "rotational": bad }));
        assert_eq!(e.hint(), Some("rotational"), "{bad}: {e}");
    }
}

#[test]
fn rotational_matches_device_flag() {
    let ssd = HintDevice { rotational: Some(false), ..disk("/dev/sda", 10 * GIB) };
    let hdd = HintDevice { rotational: Some(true), ..ssd };
    let unknown = HintDevice { rotational: None, ..ssd };
    let h = hints(json!({"rotational": "no"}));
    assert!(h.matches(&ssd));
    assert!(!h.matches(&hdd));
    assert!(!h.matches(&unknown));
}

#[test]
fn all_hints_must_match() {
    let h = hints(json!({"size": ">= 100", "model": "samsung", "rotational": false}));
    let good = HintDevice {
        model: AttrValues::One("Samsung"),
        rotational: Some(false),
        ..disk("/dev/sda", 200 * GIB)
    };
    assert!(h.matches(&good));
    assert!(!h.matches(&HintDevice { model: AttrValues::One("Intel"), ..good }));
    assert!(!h.matches(&HintDevice { size_bytes: 50 * GIB, ..good }));
    assert!(!h.matches(&HintDevice { rotational: Some(true), ..good }));
}

#[test]
fn rejected_values_name_the_hint_and_value() {
    use HintValueProblem as P;
    // (hint key, value, the problem, or None for a type / operator error)
    let cases: &[(&str, Value, Option<HintValueProblem>)] = &[
        ("size", json!(0), Some(P::NotPositiveInteger)),
        ("size", json!(-5), Some(P::NotPositiveInteger)),
        ("size", json!(1.5), Some(P::NotPositiveInteger)),
        ("size", json!(100.0), Some(P::NotPositiveInteger)),
        ("size", json!("0"), Some(P::NotPositiveInteger)),
        ("size", json!("abc"), Some(P::NotPositiveInteger)),
        ("size", json!("100 200"), Some(P::NotPositiveInteger)),
        ("size", json!(">= abc"), Some(P::NotPositiveInteger)),
        ("size", json!(">= -1"), Some(P::NotPositiveInteger)),
        ("size", json!(">="), Some(P::MissingOperand)),
        ("size", json!(""), Some(P::Empty)),
        ("size", json!("   "), Some(P::Empty)),
        ("size", json!("<range-in> [ 20 10 ]"), Some(P::RangeReversed)),
        ("size", json!("<range-in> [ 10 20"), Some(P::MalformedRange)),
        ("size", json!("<range-in> { 10 20 }"), Some(P::MalformedRange)),
        ("size", json!("<range-in> [ 10 20 30 ]"), Some(P::MalformedRange)),
        ("size", json!("<range-in>"), Some(P::MalformedRange)),
        ("size", json!("<range-in> [ 0 20 ]"), Some(P::NotPositiveInteger)),
        ("size", json!(true), None),
        ("size", json!(null), None),
        ("size", json!("s== 10"), None),
        ("size", json!("<in> 10"), None),
        ("size", json!("<or> 10 <or> 20"), None),
        ("size", json!("<all-in> 10"), None),
        ("model", json!(5), None),
        ("model", json!(null), None),
        ("serial", json!(["a"]), None),
        ("model", json!(""), Some(P::Empty)),
        ("model", json!("s=="), Some(P::MissingOperand)),
        ("model", json!("s!=   "), Some(P::MissingOperand)),
        ("model", json!("<in>"), Some(P::MissingOperand)),
        ("model", json!("<or>"), Some(P::MissingOperand)),
        ("model", json!("<or> <or>"), Some(P::MissingOperand)),
        ("model", json!("<all-in>"), Some(P::MissingOperand)),
        ("model", json!(">= 5"), None),
        ("model", json!("= 5"), None),
        ("hctl", json!("<range-in> [ 1 2 ]"), None),
    ];
    for (key, value, want) in cases {
        let e = parse_err(json!({ *key: value }));
        assert_eq!(e.hint(), Some(*key), "{key}={value}: {e}");
        let shown = e.to_string();
        assert!(shown.contains(key), "{shown:?} should name {key}");
        let raw = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert!(shown.contains(&raw), "{shown:?} should show the value {raw:?}");
        match (want, &e) {
            (Some(p), HintError::Malformed { problem, .. }) => assert_eq!(p, problem, "{e}"),
            (Some(p), other) => panic!("{key}={value}: expected {p:?}, got {other:?}"),
            (None, HintError::WrongType { .. } | HintError::OperatorNotAllowed { .. }) => {}
            (None, other) => panic!("{key}={value}: expected a type/operator error, got {other:?}"),
        }
    }
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    for key in ["foo", "Size", "volume_name", "rotation"] {
        let e = parse_err(json!({ key: "x" }));
        assert_eq!(e, HintError::UnknownHint { key: key.to_owned() });
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn null_and_empty_objects_mean_no_hints() {
    assert_eq!(RootDeviceHints::from_json(&json!(null)), Ok(None));
    assert_eq!(RootDeviceHints::from_json(&json!({})), Ok(None));
    assert_eq!(
        RootDeviceHints::from_json(&json!("/dev/sda")),
        Err(HintError::NotAnObject { found: "a string" })
    );
}

#[test]
fn instance_info_hints_take_precedence_over_properties() {
    let props = json!({"root_device": {"name": "/dev/sdb"}});
    let cases = [
        (json!({"root_device": {"name": "/dev/sda"}}), Some("/dev/sda")),
        (json!({"root_device": {}}), Some("/dev/sdb")),
        (json!({"root_device": null}), Some("/dev/sdb")),
        (json!({}), Some("/dev/sdb")),
    ];
    let devices = [disk("/dev/sda", 10 * GIB), disk("/dev/sdb", 10 * GIB)];
    for (instance_info, want) in cases {
        let h = RootDeviceHints::for_node(&instance_info, &props).unwrap();
        let chosen = find_root_device(h.as_ref(), &devices).map(|d| d.name);
        assert_eq!(chosen, want, "instance_info {instance_info}");
    }
    assert_eq!(RootDeviceHints::for_node(&json!({}), &json!({})), Ok(None));
}

#[test]
fn default_rule_picks_smallest_disk_of_at_least_4_gib() {
    let devices = [
        disk("/dev/sda", 4 * GIB - GIB / 10),
        disk("/dev/sdb", 500 * GIB),
        disk("/dev/sdd", 100 * GIB),
        disk("/dev/sdc", 100 * GIB),
        disk("/dev/sde", 1000 * GIB),
    ];
    let chosen = find_root_device(None, &devices).map(|d| d.name);
    assert_eq!(chosen, Some("/dev/sdc"));

    let exact = [disk("/dev/sdb", 5 * GIB), disk("/dev/sda", 4 * GIB)];
    assert_eq!(find_root_device(None, &exact).map(|d| d.name), Some("/dev/sda"));

    let too_small = [disk("/dev/sda", 4 * GIB - 1), disk("/dev/sdb", GIB)];
    assert_eq!(find_root_device(None, &too_small), None);

    let empty_hints = RootDeviceHints::default();
    assert_eq!(find_root_device(Some(&empty_hints), &devices).map(|d| d.name), Some("/dev/sdc"));
}

#[test]
fn hints_pick_first_match_in_list_order() {
    let devices =
        [disk("/dev/sda", 2 * GIB), disk("/dev/sdb", 500 * GIB), disk("/dev/sdc", 100 * GIB)];
    let cases = [
        (json!({"size": ">= 100"}), Some("/dev/sdb")),
        (json!({"size": "<= 100"}), Some("/dev/sda")),
        (json!({"size": 100}), Some("/dev/sdc")),
        (json!({"size": "> 500"}), None),
        (json!({"name": "sdc"}), Some("/dev/sdc")),
    ];
    for (value, want) in cases {
        let h = hints(value.clone());
        assert_eq!(find_root_device(Some(&h), &devices).map(|d| d.name), want, "{value}");
    }
}

#[test]
fn skip_list_excludes_matching_devices() {
    let serials = [vec!["S1".to_owned()], vec!["ABC-9".to_owned()], vec![]];
    let devices: Vec<HintDevice<'_>> = ["/dev/sda", "/dev/sdb", "/dev/sdc"]
        .iter()
        .zip(&serials)
        .map(|(name, serial)| HintDevice { serial: serial.into(), ..disk(name, 50 * GIB) })
        .collect();
    let skip = SkipList::from_json(&json!([
        {"name": "/dev/sda"},
        {"volume_name": "root", "size": "not even parsed"},
        {"serial": "<in> abc"},
    ]))
    .unwrap();
    assert_eq!(skip.len(), 2);
    let kept: Vec<&str> = skip.retain(&devices).iter().map(|d| d.name).collect();
    assert_eq!(kept, ["/dev/sdc"]);
    let remaining = skip.retain(&devices);
    assert_eq!(find_root_device(None, &remaining).map(|d| d.name), Some("/dev/sdc"));

    let none = SkipList::from_json(&json!(null)).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.retain(&devices).len(), 3);
}

#[test]
fn skip_list_errors() {
    assert_eq!(
        SkipList::from_json(&json!({"name": "/dev/sda"})),
        Err(HintError::SkipListNotAList { found: "an object" })
    );
    assert_eq!(
        SkipList::from_json(&json!([{"name": "/dev/sda"}, "sdb"])),
        Err(HintError::SkipEntryNotAnObject { index: 1, found: "a string" })
    );
    assert_eq!(SkipList::from_json(&json!([{}])), Err(HintError::EmptySkipEntry { index: 0 }));
    let e = SkipList::from_json(&json!([{"size": "huge"}])).unwrap_err();
    assert_eq!(e.hint(), Some("size"));
}

/// A small deterministic generator (xorshift64*), enough to spray the parser.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let i = (self.next() % items.len() as u64) as usize;
        items.get(i).copied().unwrap_or("")
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "<",
            ">",
            "=",
            "!",
            "s",
            "<in>",
            "<or>",
            "<all-in>",
            "<range-in>",
            "[",
            "]",
            "(",
            ")",
            " ",
            "  ",
            "\t",
            "\n",
            "0",
            "1",
            "9",
            "42",
            "-",
            "+",
            ".",
            "e",
            "é",
            "ß",
            "İ",
            "\u{0}",
            "%",
            "%2",
            "/dev/",
            "/",
            "18446744073709551616",
            "a",
            "Z",
            "true",
            "no",
            "s==",
            "s<",
            "==",
            "{",
            "\u{feff}",
            "\u{10ffff}",
        ];
        let n = self.next() % 9;
        (0..n).map(|_| self.pick(PIECES)).collect()
    }

    fn number(&mut self) -> Value {
        match self.next() % 4 {
            0 => json!(self.next() as i64),
            1 => json!((self.next() % 2000) as i64 - 1000),
            2 => json!(f64::from_bits(self.next() & 0x7fef_ffff_ffff_ffff)),
            _ => json!((self.next() % 1000) as f64 / 7.0),
        }
    }
}

#[test]
fn parser_never_panics_and_errors_name_the_hint() {
    let mut g = Garbage(0x9e37_79b9_7f4a_7c15);
    let serials = vec!["".to_owned(), "İ%20 <or>".to_owned(), "abc".to_owned()];
    let mut parsed = 0usize;
    for round in 0..20_000u32 {
        let device_text = g.text();
        let device = HintDevice {
            name: &device_text,
            size_bytes: g.next(),
            model: AttrValues::One(&device_text),
            vendor: AttrValues::One(""),
            serial: AttrValues::Many(&serials),
            hctl: AttrValues::One(&device_text),
            rotational: Some(round % 2 == 0),
            ..HintDevice::default()
        };
        for key in HintKey::ALL {
            let value = if round % 5 == 0 { g.number() } else { Value::String(g.text()) };
            let object = json!({ key.as_str(): value });
            match RootDeviceHints::from_json(&object) {
                Ok(Some(h)) => {
                    parsed += 1;
                    // Matching a parsed hint against odd device data must not panic either.
                    let _ = h.matches(&device);
                    let _ = find_root_device(Some(&h), std::slice::from_ref(&device));
                }
                Ok(None) => panic!("{object} has one key and cannot be empty"),
                Err(e) => {
                    assert_eq!(e.hint(), Some(key.as_str()), "{object}: {e}");
                    assert!(e.to_string().contains(key.as_str()), "{object}: {e}");
                }
            }
        }
    }
    // The generator must reach the accepting paths too, or the loop proves little.
    assert!(parsed > 1_000, "only {parsed} garbage values parsed");
}
