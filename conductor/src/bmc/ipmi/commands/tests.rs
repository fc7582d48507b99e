use super::*;

#[test]
fn open_session_request_proposes_the_suites_algorithms() {
    let request =
        open_session_request(7, PrivilegeLevel::Administrator, 0x0403_0201, CipherSuite::SUITE_17);
    assert_eq!(
        request,
        vec![
            7, 4, 0, 0, 1, 2, 3, 4, // tag, privilege, reserved, console session id
            0, 0, 0, 8, 0x03, 0, 0, 0, // RAKP-HMAC-SHA256
            1, 0, 0, 8, 0x04, 0, 0, 0, // HMAC-SHA256-128
            2, 0, 0, 8, 0x01, 0, 0, 0, // AES-CBC-128
        ]
    );
    let suite3 = open_session_request(1, PrivilegeLevel::Operator, 1, CipherSuite::SUITE_3);
    assert_eq!((suite3[1], suite3[12], suite3[20], suite3[28]), (3, 0x01, 0x01, 0x01));
}

#[test]
fn open_session_response_is_matched_by_tag_and_session() {
    let mut ok = vec![7, 0, 4, 0, 1, 2, 3, 4, 0xAA, 0xBB, 0xCC, 0xDD];
    ok.extend_from_slice(&[0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0]);
    assert_eq!(
        parse_open_session_response(&ok, 7, 0x0403_0201),
        Ok(OpenSessionResponse { status: 0, bmc_session_id: 0xDDCC_BBAA, algorithms: [1, 1, 1] })
    );
    assert!(matches!(
        parse_open_session_response(&ok, 8, 0x0403_0201),
        Err(ReplyError::Mismatch { .. })
    ));
    assert!(matches!(parse_open_session_response(&ok, 7, 5), Err(ReplyError::Mismatch { .. })));
    // An error answer carries only tag and status.
    assert_eq!(
        parse_open_session_response(&[7, 0x04], 7, 1),
        Ok(OpenSessionResponse { status: 0x04, bmc_session_id: 0, algorithms: [0; 3] })
    );
    assert!(matches!(
        parse_open_session_response(&ok[..35], 7, 0x0403_0201),
        Err(ReplyError::Short { .. })
    ));
    assert!(status_rejects_suite(0x04) && status_rejects_suite(0x11));
    assert!(!status_rejects_suite(0x0D));
    assert!(status_rejects_credentials(0x0D));
}

#[test]
fn rakp_messages_layout() {
    let rakp1 = rakp1(3, 0x1122_3344, &[0xEE; 16], 0x14, b"admin");
    assert_eq!(&rakp1[..8], &[3, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
    assert_eq!(&rakp1[8..24], &[0xEE; 16]);
    assert_eq!(&rakp1[24..28], &[0x14, 0, 0, 5]);
    assert_eq!(&rakp1[28..], b"admin");

    let mut rakp2 = vec![3, 0, 0, 0, 1, 0, 0, 0];
    rakp2.extend(0u8..16);
    rakp2.extend(16u8..32);
    rakp2.extend([0x55; 20]);
    let parsed = parse_rakp2(&rakp2, 3, 1).unwrap();
    assert_eq!(parsed.bmc_random[15], 15);
    assert_eq!(parsed.bmc_guid[0], 16);
    assert_eq!(parsed.auth_code, vec![0x55; 20]);
    assert!(matches!(parse_rakp2(&rakp2[..39], 3, 1), Err(ReplyError::Short { .. })));

    assert_eq!(rakp3(3, 9, &[1, 2]), vec![3, 0, 0, 0, 9, 0, 0, 0, 1, 2]);
    let parsed = parse_rakp4(&[3, 0, 0, 0, 1, 0, 0, 0, 9, 9], 3, 1).unwrap();
    assert_eq!(parsed.check_value, vec![9, 9]);
    assert_eq!(parse_rakp4(&[3, 0x0F], 3, 1).unwrap().status, 0x0F);
}

#[test]
fn boot_flags_encoding_follows_the_parameter_5_table() {
    // (device, persistent, efi) → data bytes 1 and 2 of parameter 5.
    let table = [
        (BootSelector::Pxe, false, false, 0x80, 0x04),
        (BootSelector::Pxe, true, false, 0xC0, 0x04),
        (BootSelector::Pxe, true, true, 0xE0, 0x04),
        (BootSelector::Disk, false, true, 0xA0, 0x08),
        (BootSelector::DiskSafeMode, false, false, 0x80, 0x0C),
        (BootSelector::Cdrom, true, false, 0xC0, 0x14),
        (BootSelector::BiosSetup, false, false, 0x80, 0x18),
    ];
    for (device, persistent, efi, byte1, byte2) in table {
        let flags = BootFlags { valid: true, persistent, efi, device };
        assert_eq!(set_boot_flags_request(flags), vec![5, byte1, byte2, 0, 0, 0], "{flags:?}");
        // What a BMC answers: version 1, parameter 5, then the same bytes.
        let answer = [1, 5, byte1, byte2, 0, 0, 0];
        assert_eq!(parse_boot_flags(&answer), Ok(flags));
    }
    // ipmi_sim keeps the device but not the valid bit.
    let sim = parse_boot_flags(&[1, 5, 0x00, 0x04, 0, 0, 0]).unwrap();
    assert_eq!((sim.valid, sim.device), (false, BootSelector::Pxe));
    assert!(matches!(parse_boot_flags(&[1, 4, 0, 0]), Err(ReplyError::Mismatch { .. })));
    assert_eq!(BootSelector::from_code(0xF), BootSelector::Other(0xF));
}

#[test]
fn chassis_control_codes() {
    let table = [
        (ChassisControl::PowerOff, 0x00),
        (ChassisControl::PowerOn, 0x01),
        (ChassisControl::PowerCycle, 0x02),
        (ChassisControl::HardReset, 0x03),
        (ChassisControl::SoftOff, 0x05),
    ];
    for (control, code) in table {
        assert_eq!(control.request(), vec![code]);
    }
    assert_eq!(parse_chassis_status(&[0x01, 0, 0]), Ok(true));
    assert_eq!(parse_chassis_status(&[0x60, 0, 0]), Ok(false));
}

#[test]
fn completion_codes_are_classified() {
    let table = [
        (0xD4, CompletionClass::Privilege),
        (0xC0, CompletionClass::Busy),
        (0xD2, CompletionClass::Busy),
        (0xC1, CompletionClass::Unsupported),
        (0x80, CompletionClass::Unsupported),
        (0xCC, CompletionClass::Failed),
        (0xFF, CompletionClass::Failed),
    ];
    for (code, class) in table {
        assert_eq!(classify_completion(code), class, "{code:#x}");
    }
    assert_eq!(completion_code_text(0xD4), "insufficient privilege level");
}

#[test]
fn device_id_and_lan_parameters() {
    let id = parse_device_id(&[0x20, 0x81, 0x09, 0x08, 0x02, 0x9F, 0x91, 0x12, 0x00, 0x02, 0x0F])
        .unwrap();
    assert_eq!(id.device_id, 0x20);
    assert_eq!(id.device_revision, 1);
    assert_eq!(id.firmware, (9, 8));
    assert_eq!(id.ipmi_version, (2, 0));
    assert_eq!(id.manufacturer_id, 0x1291);
    assert_eq!(id.product_id, 0x0F02);
    assert_eq!(get_lan_config_request(1, LAN_PARAM_MAC), vec![1, 5, 0, 0]);
    assert_eq!(parse_lan_ip(&[0x11, 10, 0, 0, 7]), Ok(Ipv4Addr::new(10, 0, 0, 7)));
    assert_eq!(parse_lan_mac(&[0x11, 1, 2, 3, 4, 5, 6]), Ok([1, 2, 3, 4, 5, 6]));
}

#[test]
fn every_parser_refuses_short_replies_without_panicking() {
    let long = [0u8; 64];
    for len in 0..long.len() {
        let data = &long[..len];
        let _ = parse_channel_auth_capabilities(data);
        let _ = parse_open_session_response(data, 0, 0);
        let _ = parse_rakp2(data, 0, 0);
        let _ = parse_rakp4(data, 0, 0);
        let _ = parse_chassis_status(data);
        let _ = parse_boot_flags(data);
        let _ = parse_device_id(data);
        let _ = parse_lan_ip(data);
        let _ = parse_lan_mac(data);
    }
    assert!(parse_device_id(&long[..10]).is_err());
    assert!(parse_channel_auth_capabilities(&long[..7]).is_err());
}
