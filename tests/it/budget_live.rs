//! Budgets: `--margin` parsing, profile budgets, the flags that choose one, and the live path
//! through a fake NVML (a shared card, a full card, a card the catalogue lacks) and the real
//! one on a machine without a driver.

use vramplan::budget::{
    find, live_budget, live_table, parse_bytes, parse_bytes_for, resolve, Budget, BudgetRequest,
    BudgetSource, FakeNvml, GpuProcess, LiveReading, Nvml, ProcessKind, SystemNvml,
    DEFAULT_MARGIN_BYTES, NO_DRIVER_MESSAGE,
};
use vramplan::units::{human, GIB, MIB};

const RTX3060_CUDA_TOTAL: u64 = 12_552_041_923;
const PYTHON_BYTES: u64 = 1_932_735_283; // 1.80 GiB
const XORG_BYTES: u64 = 182_536_110; // 0.17 GiB

/// An RTX 3060 whose board shows 12288 MiB (nvidia-smi), of which the driver keeps what CUDA
/// does not see, shared with a python job and Xorg.
fn shared_rtx3060() -> LiveReading {
    let total = 12_288 * MIB;
    let reserved = total - RTX3060_CUDA_TOTAL;
    let used = PYTHON_BYTES + XORG_BYTES;
    LiveReading {
        index: 0,
        name: "NVIDIA GeForce RTX 3060".to_string(),
        total_bytes: total,
        free_bytes: total - reserved - used,
        used_bytes: used,
        reserved_bytes: reserved,
        driver_version: "580.95.05".to_string(),
        cuda_version: "13.0".to_string(),
        compute_capability: Some((8, 6)),
        sm_count: Some(28),
        processes: vec![
            GpuProcess {
                pid: 88,
                name: Some("Xorg".to_string()),
                used_bytes: Some(XORG_BYTES),
                kind: ProcessKind::Graphics,
            },
            GpuProcess {
                pid: 1234,
                name: Some("python".to_string()),
                used_bytes: Some(PYTHON_BYTES),
                kind: ProcessKind::Compute,
            },
        ],
    }
}

#[test]
fn margin_values_parse_with_binary_and_decimal_units() {
    let cases = [
        ("256MiB", 256 * MIB),
        ("0.5GiB", GIB / 2),
        ("1.5 GB", 1_500_000_000),
        ("1.5gb", 1_500_000_000),
        ("1000000", 1_000_000),
        ("1_000_000", 1_000_000),
        ("0", 0),
        ("0MiB", 0),
        ("512m", 512 * MIB),
        ("2G", 2 * GIB),
        ("4 KiB", 4096),
        ("100 B", 100),
        ("2 MB", 2_000_000),
        ("1TiB", 1 << 40),
        (" 11.69 GiB ", RTX3060_CUDA_TOTAL),
    ];
    for (text, bytes) in cases {
        assert_eq!(parse_bytes(text).unwrap(), bytes, "{text}");
    }
    assert_eq!(DEFAULT_MARGIN_BYTES, 256 * MIB);
}

#[test]
fn bad_margins_name_the_flag_and_say_what_was_expected() {
    for (text, why) in [
        ("abc", "no number"),
        ("", "no number"),
        ("-1GiB", "a size cannot be negative"),
        ("12 parsecs", "unknown unit \"parsecs\""),
        ("1.5", "a byte count must be a whole number"),
        ("1.2.3GiB", "not a number"),
        ("99999999999999999999", "too large"),
        ("20000000000TiB", "too large"),
        ("1e3", "unknown unit \"e3\""),
    ] {
        let e = parse_bytes(text).unwrap_err().message().to_string();
        assert!(
            e.starts_with(&format!("--margin: {why}: expected a size such as 256MiB")),
            "{text:?}: {e}"
        );
        assert!(e.contains("GB = 10^9 bytes"), "{e}");
        assert!(e.ends_with(&format!("got {text:?}")), "{e}");
    }
    let e = parse_bytes_for("--probe-margin", "x").unwrap_err();
    assert!(e.message().starts_with("--probe-margin: "));
}

#[test]
fn a_profile_budget_is_total_less_margin() {
    let b = Budget::from_profile(find("rtx3060").unwrap(), DEFAULT_MARGIN_BYTES).unwrap();
    assert_eq!(b.source, BudgetSource::Profile);
    assert_eq!(b.total_bytes, RTX3060_CUDA_TOTAL);
    assert_eq!(b.usable_bytes, RTX3060_CUDA_TOTAL - 256 * MIB);
    assert_eq!(human(b.usable_bytes), "11.44 GiB");
    assert_eq!(b.margin_bytes, 256 * MIB);
    assert!(b.live.is_none() && b.others.is_none() && b.warnings.is_empty());
    assert_eq!(
        b.summary(),
        "NVIDIA GeForce RTX 3060 (rtx3060): 11.69 GiB total, margin 256.00 MiB, usable 11.44 GiB"
    );
    let json = serde_json::to_value(&b).unwrap();
    assert_eq!(json["source"], "profile");
    assert_eq!(json["usable_bytes"], RTX3060_CUDA_TOTAL - 256 * MIB);

    let unmeasured = Budget::from_profile(find("rtx4070").unwrap(), 0).unwrap();
    assert_eq!(unmeasured.usable_bytes, unmeasured.total_bytes);
    assert!(unmeasured.warnings[0].contains("not a measurement"));

    let e = Budget::from_profile(find("rtx3060").unwrap(), 12 * GIB).unwrap_err();
    assert_eq!(
        e.message(),
        "--margin 12.00 GiB leaves nothing of rtx3060's 11.69 GiB: use a smaller margin"
    );
}

#[test]
fn live_budget_on_a_shared_card_is_free_less_margin_and_names_who_holds_the_rest() {
    let reading = shared_rtx3060();
    let fake = FakeNvml::new(vec![reading.clone()]);
    let b = live_budget(&fake, 0, DEFAULT_MARGIN_BYTES).unwrap();
    // Readings given in advance are never called live.
    assert_eq!(b.source, BudgetSource::FakeNvml);
    assert_eq!(b.profile.key, "rtx3060");
    assert_eq!(b.total_bytes, RTX3060_CUDA_TOTAL);
    let free = RTX3060_CUDA_TOTAL - PYTHON_BYTES - XORG_BYTES;
    assert_eq!(reading.free_bytes, free);
    assert_eq!(b.usable_bytes, free - 256 * MIB);
    assert_eq!(
        b.others.as_deref(),
        Some("2 other processes hold 1.97 GiB: pid 1234 python 1.80 GiB, pid 88 Xorg 174.08 MiB")
    );
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.live.as_ref(), Some(&reading));
    assert_eq!(
        b.summary(),
        "NVIDIA GeForce RTX 3060 (GPU 0, VRAMPLAN_FAKE_NVML readings, not a live card): 9.72 GiB free of 11.69 GiB, margin 256.00 MiB, usable 9.47 GiB"
    );
    assert_eq!(serde_json::to_value(&b).unwrap()["source"], "fake-nvml");
}

/// An NVML that is not the fake one (as `SystemNvml` is): its budget is live.
struct DriverNvml(Vec<LiveReading>);

impl Nvml for DriverNvml {
    fn devices(&self) -> vramplan::error::Result<Vec<LiveReading>> {
        Ok(self.0.clone())
    }
}

#[test]
fn a_driver_reading_is_live_and_says_so() {
    let b = live_budget(&DriverNvml(vec![shared_rtx3060()]), 0, DEFAULT_MARGIN_BYTES).unwrap();
    assert_eq!(b.source, BudgetSource::Live);
    assert!(
        b.summary()
            .starts_with("NVIDIA GeForce RTX 3060 (GPU 0, live): "),
        "{}",
        b.summary()
    );
    assert_eq!(serde_json::to_value(&b).unwrap()["source"], "live");
}

#[test]
fn a_full_card_leaves_zero_usable_not_an_underflow() {
    let mut reading = shared_rtx3060();
    reading.free_bytes = 100 * MIB;
    reading.used_bytes = RTX3060_CUDA_TOTAL - 100 * MIB;
    reading.processes[1].used_bytes = Some(reading.used_bytes - XORG_BYTES);
    let b = live_budget(&FakeNvml::new(vec![reading]), 0, DEFAULT_MARGIN_BYTES).unwrap();
    assert_eq!(b.usable_bytes, 0);
    assert!(!b.fits(1));
    assert_eq!(b.headroom_bytes(GIB), -(GIB as i64));
    assert_eq!(
        b.warnings,
        vec!["GPU 0 has only 100.00 MiB free, less than the 256.00 MiB margin: nothing fits"]
    );
    assert!(b
        .others
        .unwrap()
        .starts_with("2 other processes hold 11.59 GiB: pid 1234 python 11.42 GiB"));
}

#[test]
fn a_card_missing_from_the_catalogue_gets_a_generic_profile_and_a_warning() {
    let total = 97_887 * MIB;
    let reading = LiveReading {
        index: 1,
        name: "NVIDIA RTX PRO 6000 Blackwell Workstation Edition".to_string(),
        total_bytes: total,
        free_bytes: total - 600 * MIB - 2 * MIB,
        used_bytes: 2 * MIB,
        reserved_bytes: 600 * MIB,
        driver_version: "580.95.05".to_string(),
        cuda_version: "13.0".to_string(),
        compute_capability: Some((12, 0)),
        sm_count: Some(188),
        processes: vec![],
    };
    let fake = FakeNvml::new(vec![shared_rtx3060(), reading.clone()]);
    let b = live_budget(&fake, 1, GIB).unwrap();
    assert_eq!(b.profile.key, "rtxpro6000blackwellworkstationedition");
    assert_eq!(b.profile.name, reading.name);
    assert_eq!(b.total_bytes, total - 600 * MIB);
    assert_eq!(b.profile.total_bytes, total - 600 * MIB);
    assert_eq!(b.usable_bytes, reading.free_bytes - GIB);
    assert_eq!(b.profile.compute_capability, (12, 0));
    assert!(b.profile.bf16 && !b.profile.has_throughput());
    assert_eq!(b.profile.cublas_workspace_bytes, 8_519_680);
    assert_eq!(b.profile.context_bytes, 192 * MIB + 1536 * 188 * 1024);
    assert_eq!(b.warnings.len(), 1);
    assert!(
        b.warnings[0].starts_with(
            "\"NVIDIA RTX PRO 6000 Blackwell Workstation Edition\" is not in the catalogue: using a \
             profile built from NVML (compute capability 12.0, 188 SMs"
        ),
        "{}",
        b.warnings[0]
    );
    assert_eq!(
        b.others.as_deref(),
        Some("no other process holds memory on this card")
    );

    // NVML without a compute capability: the safe defaults, said out loud.
    let mut unknown = reading;
    unknown.compute_capability = None;
    unknown.sm_count = None;
    let b = live_budget(&FakeNvml::new(vec![unknown]), 1, GIB).unwrap();
    assert_eq!(b.profile.compute_capability, (0, 0));
    assert_eq!(b.profile.compute_capability_string(), "unknown");
    assert!(!b.profile.bf16);
    assert_eq!(b.profile.cublas_workspace_bytes, 32 * MIB);
    assert_eq!(b.profile.context_bytes, 520 * MIB);
    assert!(
        b.warnings[0].contains("bf16 assumed unsupported"),
        "{}",
        b.warnings[0]
    );
}

#[test]
fn same_named_cards_are_told_apart_by_their_total() {
    let reading = |board_mib: u64| LiveReading {
        index: 0,
        name: "NVIDIA GeForce RTX 4060 Ti".to_string(),
        total_bytes: board_mib * MIB,
        free_bytes: board_mib * MIB - 400 * MIB,
        used_bytes: 0,
        reserved_bytes: 400 * MIB,
        driver_version: String::new(),
        cuda_version: String::new(),
        compute_capability: Some((8, 9)),
        sm_count: Some(34),
        processes: vec![],
    };
    let key = |mib| {
        live_budget(&FakeNvml::new(vec![reading(mib)]), 0, 0)
            .unwrap()
            .profile
            .key
    };
    assert_eq!(key(8_188), "rtx4060ti-8gb");
    assert_eq!(key(16_380), "rtx4060ti-16gb");
}

#[test]
fn memory_no_listed_process_accounts_for_is_reported() {
    let mut reading = shared_rtx3060();
    reading.processes.clear();
    let b = live_budget(&FakeNvml::new(vec![reading]), 0, 0).unwrap();
    assert_eq!(
        b.others.as_deref(),
        Some("1.97 GiB is in use by processes NVML does not list (another container or VM?)")
    );
}

#[test]
fn wrong_index_and_empty_machine_are_plain_errors() {
    let fake = FakeNvml::new(vec![shared_rtx3060()]);
    let e = live_budget(&fake, 3, 0).unwrap_err();
    assert_eq!(
        e.message(),
        "--gpu-index 3: no such GPU; this machine has 0 NVIDIA GeForce RTX 3060"
    );
    let e = live_budget(&FakeNvml::new(vec![]), 0, 0).unwrap_err();
    assert!(e
        .message()
        .starts_with("NVML found no NVIDIA GPU on this machine"));
}

#[test]
fn the_real_nvml_without_a_driver_says_so_in_one_plain_line() {
    let e = SystemNvml::with_library("/nonexistent/libnvidia-ml.so.1")
        .devices()
        .unwrap_err();
    assert_eq!(e.message(), NO_DRIVER_MESSAGE);
    assert_eq!(
        NO_DRIVER_MESSAGE,
        "no NVIDIA driver found (libnvidia-ml.so.1): use --gpu NAME to plan for a card from the catalogue"
    );
    // The default library: this build machine has no driver; where one exists, it reads.
    match SystemNvml::new().devices() {
        Err(e) => assert_eq!(e.message(), NO_DRIVER_MESSAGE),
        Ok(readings) => assert!(readings.iter().all(|r| r.total_bytes > 0)),
    }
    let e = live_budget(&SystemNvml::with_library("/nonexistent/x.so"), 0, 0).unwrap_err();
    assert_eq!(e.message(), NO_DRIVER_MESSAGE);
}

fn request(gpu: Option<&str>, live: bool, margin: &str) -> BudgetRequest {
    BudgetRequest {
        gpu: gpu.map(str::to_string),
        gpu_file: None,
        live,
        gpu_index: 0,
        margin: margin.to_string(),
        safety: "0".to_string(),
    }
}

#[test]
fn resolve_picks_the_source_the_flags_name() {
    let card = FakeNvml::new(vec![shared_rtx3060()]);
    let no_driver = FakeNvml::no_driver();

    let b = resolve(&request(Some("a100-40gb"), false, "1GiB"), &card)
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.source, b.profile.key.as_str()),
        (BudgetSource::Profile, "a100-40gb")
    );
    assert_eq!(b.usable_bytes, b.total_bytes - GIB);

    let b = resolve(&request(None, true, "256MiB"), &card)
        .unwrap()
        .unwrap();
    assert_eq!(b.source, BudgetSource::FakeNvml);

    // Neither --gpu nor --live: the live card when there is one, else no verdict.
    let b = resolve(&request(None, false, "256MiB"), &card)
        .unwrap()
        .unwrap();
    assert_eq!(b.source, BudgetSource::FakeNvml);
    assert_eq!(
        resolve(&request(None, false, "256MiB"), &no_driver).unwrap(),
        None
    );

    let e = resolve(&request(None, true, "256MiB"), &no_driver).unwrap_err();
    assert_eq!(e.message(), NO_DRIVER_MESSAGE);
    let e = resolve(&request(Some("rtx3060"), true, "256MiB"), &card).unwrap_err();
    assert!(
        e.message()
            .starts_with("--gpu and --live exclude each other"),
        "{e}"
    );
    let e = resolve(&request(Some("rtx3060"), false, "lots"), &card).unwrap_err();
    assert!(e.message().starts_with("--margin: no number"), "{e}");
    let e = resolve(&request(Some("a100"), false, "0"), &card).unwrap_err();
    assert!(e.message().contains("say which"), "{e}");
}

#[test]
fn fake_readings_load_from_json() {
    let json = serde_json::to_string(&vec![shared_rtx3060()]).unwrap();
    assert!(json.contains("\"kind\":\"compute\""), "{json}");
    let fake = FakeNvml::from_json(&json, "readings.json").unwrap();
    assert_eq!(fake.devices().unwrap(), vec![shared_rtx3060()]);
    let minimal = r#"[{"index": 0, "name": "Tesla T4", "total_bytes": 16106127360,
        "free_bytes": 15000000000, "used_bytes": 0, "driver_version": "535.104.05",
        "cuda_version": "12.2"}]"#;
    let fake = FakeNvml::from_json(minimal, "t4.json").unwrap();
    assert_eq!(live_budget(&fake, 0, 0).unwrap().profile.key, "t4");
    let e = FakeNvml::from_json("{}", "bad.json").unwrap_err();
    assert_eq!(
        e.message(),
        "bad.json:1:1: wrong type: got an object, expected a list; expected a list of NVML readings"
    );
}

#[test]
fn the_live_table_shows_each_card_and_its_holders() {
    let mut other = shared_rtx3060();
    other.index = 1;
    other.name = "NVIDIA Mystery GPU".to_string();
    other.processes.clear();
    other.used_bytes = 0;
    let out = live_table(&[shared_rtx3060(), other]);
    for cell in [
        "NVIDIA GeForce RTX 3060",
        "rtx3060",
        "11.69 GiB",
        "1.97 GiB",
        "580.95.05",
        "13.0",
        "1234 python C 1.80 GiB",
        "88 Xorg G 174.08 MiB",
        "(not listed)",
    ] {
        assert!(out.contains(cell), "{cell} in\n{out}");
    }
    assert!(out.contains("GPU 0: 2 other processes hold 1.97 GiB"));
    assert!(out.contains("GPU 1: no other process holds memory on this card"));
}
