/**
 * Every option of qemu-system-x86_64 7.2, and whether it takes an argument: the list its -help
 * prints, each tried on the real binary (an option that takes an argument answers
 * "requires an argument" when given none). An option not here is QEMU's "invalid option".
 */
export const OPTIONS_WITH_ARGUMENT: ReadonlySet<string> = new Set([
  '-D', '-L', '-M', '-accel', '-acpitable', '-action', '-add-fd', '-append', '-audio', '-audiodev', '-bios',
  '-blockdev', '-boot', '-cdrom', '-chardev', '-chroot', '-compat', '-cpu', '-d', '-debugcon', '-device',
  '-dfilter', '-display', '-drive', '-dtb', '-dump-vmstate', '-echr', '-fda', '-fdb', '-fsdev', '-fw_cfg',
  '-gdb', '-global', '-hda', '-hdb', '-hdc', '-hdd', '-icount', '-incoming', '-initrd', '-iscsi', '-k',
  '-kernel', '-loadvm', '-m', '-machine', '-mem-path', '-mon', '-monitor', '-msg', '-mtdblock', '-name',
  '-net', '-netdev', '-nic', '-numa', '-object', '-option-rom', '-overcommit', '-parallel', '-pflash',
  '-pidfile', '-plugin', '-qmp', '-qmp-pretty', '-readconfig', '-rotate', '-rtc', '-runas', '-sandbox',
  '-sd', '-seed', '-serial', '-set', '-smbios', '-smp', '-spice', '-tpmdev', '-trace', '-usbdevice', '-uuid',
  '-vga', '-virtfs', '-vnc', '-watchdog-action', '-xen-domid',
]);

export const OPTIONS_WITHOUT_ARGUMENT: ReadonlySet<string> = new Set([
  '-S', '-async-teardown', '-audio-help', '-daemonize', '-enable-kvm', '-enable-sync-profile',
  '-full-screen', '-h', '-help', '-mem-prealloc', '-no-acpi', '-no-fd-bootchk', '-no-hpet', '-no-reboot',
  '-no-shutdown', '-no-user-config', '-nodefaults', '-nographic', '-only-migratable', '-portrait',
  '-preconfig', '-s', '-singlestep', '-snapshot', '-usb', '-version', '-win2k-hack', '-xen-attach',
  '-xen-domid-restrict',
]);
