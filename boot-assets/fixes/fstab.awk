# fstab in -> fstab out, for 10-fstab (POSIX awk: runs under mawk, gawk and busybox awk).
# -v devices=FILE: `blkid -o export` blocks, plus MOUNTPOINT= and ALIAS= lines per block.

function unblkid(v,   r) {          # blkid export escapes with backslashes
  r = v; gsub(/\\/, "", r); return r
}
function unoctal(s,   r, i, c, d) {  # fstab escapes: \040 space, \011 tab, \134 backslash
  r = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "\\" && substr(s, i + 1, 3) ~ /^[0-7][0-7][0-7]$/) {
      d = (substr(s, i + 1, 1) * 64) + (substr(s, i + 2, 1) * 8) + substr(s, i + 3, 1)
      r = r sprintf("%c", d); i += 3
    } else r = r c
  }
  return r
}
function unhex(s,   r, i, c, h) {    # udev /dev/disk/by-label names escape with \xNN
  r = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == "\\" && substr(s, i + 1, 1) == "x" && substr(s, i + 2, 2) ~ /^[0-9a-fA-F][0-9a-fA-F]$/) {
      h = tolower(substr(s, i + 2, 2))
      r = r sprintf("%c", index("0123456789abcdef", substr(h, 1, 1)) * 16 - 16 + index("0123456789abcdef", substr(h, 2, 1)) - 1)
      i += 3
    } else r = r c
  }
  return r
}
function octal(s,   r, i, c) {       # encode a mount point for fstab
  r = ""
  for (i = 1; i <= length(s); i++) {
    c = substr(s, i, 1)
    if (c == " ") c = "\\040"; else if (c == "\t") c = "\\011"; else if (c == "\\") c = "\\134"
    r = r c
  }
  return r
}
function load(   line, k, v, p) {
  nd = 0; open_block = 0
  while ((getline line < devices) > 0) {
    if (line ~ /^[ \t]*$/) { open_block = 0; continue }
    p = index(line, "="); if (p == 0) continue
    k = substr(line, 1, p - 1); v = unblkid(substr(line, p + 1))
    if (k == "DEVNAME" || !open_block) { nd++; open_block = 1 }
    if (k == "MOUNTPOINT") { if (!(v in mp)) { mp[v] = nd; nmp++; mplist[nmp] = v } ; continue }
    if (k == "ALIAS") { alias[v] = nd; continue }
    dev[nd, k] = v                   # case kept and compared exactly, as mount(8) does
    if (k == "DEVNAME") byname[v] = nd
    else if (k == "UUID") byuuid[v] = nd
    else if (k == "LABEL") bylabel[v] = nd
    else if (k == "PARTUUID") bypartuuid[v] = nd
    else if (k == "PARTLABEL") bypartlabel[v] = nd
  }
  close(devices)
}
function lookup(spec,   s, v) {      # device index for an fstab spec, 0 if gone
  s = unoctal(spec)
  if (s ~ /^UUID=/) { v = substr(s, 6); return (v in byuuid) ? byuuid[v] : 0 }
  if (s ~ /^LABEL=/) { v = substr(s, 7); return (v in bylabel) ? bylabel[v] : 0 }
  if (s ~ /^PARTUUID=/) { v = substr(s, 10); return (v in bypartuuid) ? bypartuuid[v] : 0 }
  if (s ~ /^PARTLABEL=/) { v = substr(s, 11); return (v in bypartlabel) ? bypartlabel[v] : 0 }
  if (s in byname) return byname[s]
  if (s in alias) return alias[s]
  if (s ~ /^\/dev\/disk\/by-uuid\//) { v = unhex(substr(s, 19)); return (v in byuuid) ? byuuid[v] : 0 }
  if (s ~ /^\/dev\/disk\/by-label\//) { v = unhex(substr(s, 20)); return (v in bylabel) ? bylabel[v] : 0 }
  if (s ~ /^\/dev\/disk\/by-partuuid\//) { v = substr(s, 23); return (v in bypartuuid) ? bypartuuid[v] : 0 }
  if (s ~ /^\/dev\/disk\/by-partlabel\//) { v = unhex(substr(s, 24)); return (v in bypartlabel) ? bypartlabel[v] : 0 }
  return 0
}
function ref(d) {                    # how a new entry names device d
  if (dev[d, "UUID"] != "") return "UUID=" dev[d, "UUID"]
  if (dev[d, "PARTUUID"] != "") return "PARTUUID=" dev[d, "PARTUUID"]
  return octal(dev[d, "DEVNAME"])
}
function hasopt(opts, o) { return ("," opts ",") ~ ("," o "(,|=)") }
function isblock(spec) { return spec ~ /^(UUID|LABEL|PARTUUID|PARTLABEL)=/ || spec ~ /^\/dev\// }
function isnet(type, opts) {
  return type ~ /^(nfs|nfs4|cifs|smb3|smbfs|ncpfs|sshfs|fuse\.sshfs|glusterfs|fuse\.glusterfs|ceph|fuse\.ceph|9p|davfs|fuse\.s3fs|afs|ocfs2|gfs2|lustre)$/ || hasopt(opts, "_netdev")
}
function defopts(type, file) {
  if (type ~ /^ext[234]$/) return (file == "/") ? "errors=remount-ro" : "defaults"
  if (type == "vfat") return "umask=0077"
  if (type == "swap") return "sw"
  return "defaults"
}
function defpass(type, file) {
  if (type == "swap" || type == "xfs" || type == "btrfs") return 0
  return (file == "/") ? 1 : 2
}
function warn(msg) { print "10-fstab: warning: " msg > "/dev/stderr" }
# Replace the first field of a line, keeping its spacing.
function respec(line, newspec,   lead, rest) {
  match(line, /^[ \t]*/); lead = substr(line, 1, RLENGTH); rest = substr(line, RLENGTH + 1)
  match(rest, /^[^ \t]+/)
  return lead newspec substr(rest, RLENGTH + 1)
}

BEGIN { load() }
{ n++; L[n] = $0 }
END {
  # Pass 1: classify every line; note swap areas already in use.
  for (i = 1; i <= n; i++) {
    kind[i] = "keep"
    if (L[i] ~ /^[ \t]*(#|$)/) continue
    nf = split(L[i], f, /[ \t]+/); o = (f[1] == "") ? 1 : 0
    spec = f[1 + o]; file = unoctal(f[2 + o]); type = f[3 + o]; opts = f[4 + o]
    if (nf - o < 3) { warn("malformed line kept as is: " L[i]); continue }
    if (opts == "") opts = "defaults"
    if (hasopt(opts, "noauto") || isnet(type, opts) || hasopt(opts, "bind") || hasopt(opts, "rbind") || !isblock(spec)) continue
    S[i] = spec; F[i] = file; T[i] = type; O[i] = opts; FR[i] = (f[5 + o] == "") ? 0 : f[5 + o]; P[i] = (f[6 + o] == "") ? 0 : f[6 + o]
    if (type == "swap") {
      d = lookup(spec)
      if (d && dev[d, "TYPE"] == "swap" && !(d in swapused)) { kind[i] = "swap"; D[i] = d; swapused[d] = 1 }
      else kind[i] = "swapfree"
    } else if (file in mp) { kind[i] = "mounted"; D[i] = mp[file]; mpused[file] = 1 }
    else if (lookup(spec)) kind[i] = "keep"
    else if (file == "/") { kind[i] = "keep"; warn("root entry kept though its device is not found: " L[i]) }
    else kind[i] = "gone"
  }
  # Pass 2: write.
  for (i = 1; i <= n; i++) {
    if (kind[i] == "swapfree") {
      for (d = 1; d <= nd; d++) if (dev[d, "TYPE"] == "swap" && !(d in swapused)) break
      if (d <= nd) { kind[i] = "swap"; D[i] = d; swapused[d] = 1 } else kind[i] = "gone"
    }
    if (kind[i] == "keep") print L[i]
    else if (kind[i] == "gone") print "# ramboot-fix: device not found: " L[i]
    else if (kind[i] == "swap") print respec(L[i], ref(D[i]))
    else if (kind[i] == "mounted") {
      d = D[i]; nt = dev[d, "TYPE"]
      if (nt == "" || nt == T[i]) print respec(L[i], ref(d))
      else print ref(d) "\t" octal(F[i]) "\t" nt "\t" defopts(nt, F[i]) "\t" FR[i] "\t" defpass(nt, F[i])
    }
  }
  # Mounted filesystems with no entry, parents first.
  for (a = 1; a <= nmp; a++) for (b = a + 1; b <= nmp; b++)
    if (length(mplist[b]) < length(mplist[a])) { t = mplist[a]; mplist[a] = mplist[b]; mplist[b] = t }
  header = 0
  for (a = 1; a <= nmp; a++) {
    file = mplist[a]; if (file in mpused) continue
    d = mp[file]; nt = dev[d, "TYPE"]; if (nt == "" || nt == "swap") continue
    if (!header) { print "# added by ramboot-fix: filesystems mounted on the target"; header = 1 }
    print ref(d) "\t" octal(file) "\t" nt "\t" defopts(nt, file) "\t0\t" defpass(nt, file)
  }
}
