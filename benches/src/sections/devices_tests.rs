use super::*;

#[test]
fn blkbench_lines_become_rates() {
    let out = "boot...\nblkbench: seq-read 4194304 2097152000\r\n\
               blkbench: seq-write 4194304 4194304000\nblkbench: rand-read 200 10000000000\n";
    let f = parse(out).unwrap();
    assert!((f.seq_read_mb_s - 2.0).abs() < 1e-9);
    assert!((f.seq_write_mb_s - 1.0).abs() < 1e-9);
    assert!((f.rand_read_per_s - 20.0).abs() < 1e-9);
    assert!(parse("blkbench: seq-read 1 0\n").is_err());
    assert!(parse("nothing").unwrap_err().contains("seq-read"));
}

#[test]
fn qemu_gets_kvmini_parameters_with_its_own_devices() {
    let kvmini = "console=ttyS0 noxsave virtio_mmio.device=4K@0xd0000000:5 \
                  virtio_mmio.device=4K@0xd0001000:6 -- sh -c \"blkbench /dev/vda 4 200\"";
    let init = guest_command(false, true);
    let line = qemu_cmdline(kvmini, true, &init);
    assert!(
        line.starts_with(&format!(
            "console=ttyS0 noxsave {} {} -- sh -c \"blkbench /dev/vda 4 200 && ",
            QEMU_DEVICES[0], QEMU_DEVICES[1]
        )),
        "{line}"
    );
    assert!(!line.contains("vsock"), "{line}");
    assert!(
        line.ends_with(&format!("nc {HOST_ADDR} {TCP_PORT} </tmp/t\"")),
        "{line}"
    );
}
