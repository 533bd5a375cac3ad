/** /etc/fstab text -> entries (fstab(5)), and what kind of thing an entry names. */

export interface FstabLine {
  /** fs_spec as written: UUID=..., LABEL=..., PARTUUID=..., /dev/..., tmpfs, server:/export... */
  spec: string;
  /** fs_file (mountpoint, or "none"/"swap" for swap). */
  file: string;
  vfstype: string;
  options: string;
  dump: number;
  pass: number;
}

/** fstab escapes spaces and the like as \040 (octal): decode them. */
function unescapeField(f: string): string {
  return f.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses fstab text. Comments and blank lines are skipped; a line with fewer than 3 fields or a
 *  non-numeric dump/pass throws with its line number. */
export function parseFstab(text: string, where = 'fstab'): FstabLine[] {
  const out: FstabLine[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const f = line.split(/\s+/);
    if (f.length < 3) throw new Error(`${where} line ${i + 1}: expected at least 3 fields, got ${JSON.stringify(line)}`);
    const num = (v: string | undefined, name: string): number => {
      if (v === undefined) return 0;
      if (!/^\d+$/.test(v)) throw new Error(`${where} line ${i + 1}: ${name} must be a number, got ${JSON.stringify(v)}`);
      return Number(v);
    };
    out.push({
      spec: unescapeField(f[0]!),
      file: unescapeField(f[1]!),
      vfstype: f[2]!,
      options: f[3] ?? 'defaults',
      dump: num(f[4], 'dump'),
      pass: num(f[5], 'pass'),
    });
  });
  return out;
}

const NETWORK_FS = new Set(['nfs', 'nfs4', 'cifs', 'smb3', 'smbfs', 'sshfs', 'fuse.sshfs', 'glusterfs', 'ceph', 'davfs', '9p', 'virtiofs']);
const VIRTUAL_FS = new Set(['tmpfs', 'proc', 'sysfs', 'devpts', 'devtmpfs', 'cgroup', 'cgroup2', 'securityfs', 'debugfs', 'tracefs', 'hugetlbfs', 'mqueue', 'efivarfs', 'binfmt_misc', 'configfs', 'fusectl', 'pstore', 'ramfs', 'autofs']);

export function isNetworkFs(vfstype: string): boolean {
  return NETWORK_FS.has(vfstype);
}

export function isVirtualFs(vfstype: string): boolean {
  return VIRTUAL_FS.has(vfstype);
}

export function hasOption(options: string, name: string): boolean {
  return options.split(',').includes(name);
}

/** True when an fstab spec names a block device (by tag or /dev path), so it should resolve to one. */
export function namesBlockDevice(spec: string): boolean {
  return /^(UUID|LABEL|PARTUUID|PARTLABEL)=/.test(spec) || spec.startsWith('/dev/');
}
