/**
 * Every option of qemu-system-x86_64, per release, and whether it takes an argument: the list its
 * -help prints, each tried on the real binary (an option that takes an argument answers
 * "requires an argument" when given none). An option not in its release's table is QEMU's
 * "invalid option". A profile names its table (src/profiles).
 */
export interface OptionTable {
  readonly withArgument: ReadonlySet<string>;
  readonly withoutArgument: ReadonlySet<string>;
}

const WITH_ARGUMENT_7_2: ReadonlySet<string> = new Set([
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

const WITHOUT_ARGUMENT_7_2: ReadonlySet<string> = new Set([
  '-S', '-async-teardown', '-audio-help', '-daemonize', '-enable-kvm', '-enable-sync-profile',
  '-full-screen', '-h', '-help', '-mem-prealloc', '-no-acpi', '-no-fd-bootchk', '-no-hpet', '-no-reboot',
  '-no-shutdown', '-no-user-config', '-nodefaults', '-nographic', '-only-migratable', '-portrait',
  '-preconfig', '-s', '-singlestep', '-snapshot', '-usb', '-version', '-win2k-hack', '-xen-attach',
  '-xen-domid-restrict',
]);

export const OPTIONS_7_2: OptionTable = { withArgument: WITH_ARGUMENT_7_2, withoutArgument: WITHOUT_ARGUMENT_7_2 };

/** A later release's table: the one before it, less what it removed, with what it added. */
export function laterOptions(
  before: OptionTable,
  change: { removed: readonly string[]; addedWithArgument: readonly string[]; addedWithoutArgument: readonly string[] },
): OptionTable {
  const keep = (set: ReadonlySet<string>, added: readonly string[]): ReadonlySet<string> =>
    new Set([...[...set].filter((o) => !change.removed.includes(o)), ...added]);
  return { withArgument: keep(before.withArgument, change.addedWithArgument), withoutArgument: keep(before.withoutArgument, change.addedWithoutArgument) };
}
