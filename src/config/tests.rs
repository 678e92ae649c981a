use super::*;

#[test]
fn sizes_parse_with_binary_suffixes() {
    assert_eq!(parse_size("16M"), Ok(16 << 20));
    assert_eq!(parse_size("16"), Ok(16 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("512k"), Ok(512 << 10));
    assert_eq!(parse_size("4096b"), Ok(4096));
    assert_eq!(parse_size("0"), Ok(0));
    for big in ["99999999T", "99999999999999999999", "16777216T"] {
        assert_eq!(
            parse_size(big),
            Err(Error::SizeTooLarge(big.into())),
            "{big}"
        );
        assert_eq!(parse_byte_count(big), Err(Error::SizeTooLarge(big.into())));
    }
    assert!(Error::SizeTooLarge("99999999T".into())
        .to_string()
        .starts_with("'99999999T' is too large"));
    assert_eq!(parse_size("16777215T"), Ok(16777215 << 40));
    for bad in ["", "M", "16X", "1.5G", "-1"] {
        assert_eq!(parse_size(bad), Err(Error::BadSize(bad.into())), "{bad}");
        assert_eq!(
            parse_byte_count(bad),
            Err(Error::BadSize(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(parse_byte_count("4096"), Ok(4096));
    assert_eq!(parse_byte_count("1K"), Ok(1024));
    assert_eq!(parse_byte_count("2M"), Ok(2 << 20));
}

#[test]
fn numbers_parse_in_decimal_and_hex() {
    assert_eq!(parse_u64("0x100000"), Ok(0x10_0000));
    assert_eq!(parse_u64("0x10_0000"), Ok(0x10_0000));
    assert_eq!(parse_u64("4096"), Ok(4096));
    assert!(parse_u64("0xg").is_err());
    assert!(parse_u64("ten").is_err());
}

#[test]
fn memory_sizes_are_bounded() {
    assert_eq!(validate_mem_size(0, None), Err(Error::MemTooSmall(0)));
    assert_eq!(
        validate_mem_size(1 << 19, None),
        Err(Error::MemTooSmall(1 << 19))
    );
    assert_eq!(
        validate_mem_size((1 << 20) + 1, None),
        Err(Error::MemNotAligned((1 << 20) + 1))
    );
    assert!(matches!(
        validate_mem_size(1 << 40, Some(24 << 30)),
        Err(Error::MemTooLarge { .. })
    ));
    assert_eq!(validate_mem_size(16 << 20, Some(24 << 30)), Ok(()));
}

#[test]
fn the_debug_exit_device_needs_a_width_and_ports_of_its_own() {
    let ok = DebugExitConfig {
        iobase: 0xf4,
        iosize: 4,
    };
    assert_eq!(validate_debug_exit(ok), Ok(()));
    assert_eq!(validate_debug_exit(DebugExitConfig::default()), Ok(()));
    assert_eq!(
        validate_debug_exit(DebugExitConfig { iosize: 3, ..ok }),
        Err(Error::DebugExitSize(3))
    );
    let err = validate_debug_exit(DebugExitConfig {
        iobase: 0x3fc,
        iosize: 4,
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--debug-exit iobase=0x3fc runs into the serial port; choose other ports"
    );
    assert!(validate_debug_exit(DebugExitConfig {
        iobase: 0xfffe,
        iosize: 4
    })
    .is_err());
}

#[test]
fn options_must_suit_the_image() {
    let mut c = VmConfig::new("k");
    assert_eq!(c.validate_for_image(ImageFormat::Raw, false), Ok(()));
    c.initrd = Some("initrd".into());
    assert!(matches!(
        c.validate_for_image(ImageFormat::Raw, false),
        Err(Error::KernelOnlyOption {
            option: "--initrd",
            ..
        })
    ));
    assert_eq!(c.validate_for_image(ImageFormat::Elf, true), Ok(()));
    c.load_addr = Some(0x20_0000);
    let err = c.validate_for_image(ImageFormat::Elf, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--load-addr applies to raw images only, and k is an ELF kernel (--format raw boots it as raw code)"
    );
    let mut c = VmConfig::new("k");
    c.cpus = 2;
    assert_eq!(
        c.validate_for_image(ImageFormat::Elf, false),
        Err(Error::CpusNeedLinux(2))
    );
    assert_eq!(c.validate_for_image(ImageFormat::BzImage, true), Ok(()));
}

#[test]
fn modules_are_for_multiboot_kernels_only() {
    let mut c = VmConfig::new("k");
    c.modules.push(ModuleConfig::new("m"));
    c.initrd = Some("initrd".into());
    c.cmdline = Some("x".into());
    for format in [ImageFormat::Multiboot1, ImageFormat::Multiboot2] {
        assert_eq!(c.validate_for_image(format, false), Ok(()));
    }
    for format in [ImageFormat::Raw, ImageFormat::Elf, ImageFormat::BzImage] {
        assert_eq!(
            c.validate_for_image(format, false),
            Err(Error::ModuleNeedsMultiboot {
                path: "k".into(),
                format
            })
        );
    }
    let err = c.validate_for_image(ImageFormat::Raw, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--module applies to Multiboot kernels only, and k is a raw image (other kernels take a single --initrd)"
    );
    c.modules[0].string = Some("a\0b".into());
    assert_eq!(c.validate(), Err(Error::ModuleString("m".into())));
}

#[test]
fn errors_tell_the_user_what_to_do() {
    let e = Error::MemTooLarge {
        requested: 1 << 40,
        host: 24 << 30,
    };
    assert_eq!(
        e.to_string(),
        "guest memory of 1 TiB is more than this host's 24 GiB of RAM; lower --mem"
    );
    assert_eq!(human_size(1536 << 20), "1.5 GiB");
    assert_eq!(human_size(100), "100 bytes");
}

#[test]
fn the_success_status_is_one_a_guest_can_give() {
    assert_eq!(success_status(33), Ok(33));
    assert_eq!(success_status(1), Ok(1));
    assert_eq!(success_status(119), Ok(119));
    for bad in [0, 120, 124, 255, 256, 1 << 40] {
        assert_eq!(
            success_status(bad),
            Err(Error::BadSuccessStatus(bad)),
            "{bad}"
        );
    }
    assert!(Error::BadSuccessStatus(0)
        .to_string()
        .contains("use 1 to 119"));
    let mut c = VmConfig::new("k.elf");
    c.success_status = Some(120);
    assert_eq!(c.validate(), Err(Error::BadSuccessStatus(120)));
    c.success_status = Some(33);
    assert_eq!(c.validate(), Ok(()));
}
