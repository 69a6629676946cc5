#!/usr/bin/env python3
"""Which way of reading cold data keeps the hot set in memory? (issue 13)

Run by `scripts/bench-isolation --methods` (root): this process joins a memory cgroup
(MEMORY bytes) with a blkio read throttle (READ_BPS on the data directory's disk), makes a
HOT file (read twice: cached, like a live tail) and a COLD file (dropped from the cache, like
old segments), then for each method reads the whole cold file in 1 MiB reads and reports its
MB/s and how much of the hot file is still resident afterwards (util-linux `fincore`).

Usage: cold_read_methods.py DIR CGROUP_MEMORY_DIR CGROUP_BLKIO_DIR HOT_MIB COLD_MIB
"""
import mmap
import os
import subprocess
import sys
import time

RWF_DONTCACHE = 0x80
CHUNK = 1 << 20


def resident_fraction(path):
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", path],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) / max(int(out[1]), 1)


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def read_all(path, how):
    flags = os.O_RDONLY | (os.O_DIRECT if how == "O_DIRECT" else 0)
    fd = os.open(path, flags)
    size = os.fstat(fd).st_size
    buf = mmap.mmap(-1, CHUNK)  # page aligned: O_DIRECT needs it
    if how == "pread + FADV_SEQUENTIAL":
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    pos = 0
    fallback = False
    while pos < size:
        if how == "preadv2(RWF_DONTCACHE)" and not fallback:
            try:
                n = os.preadv(fd, [buf], pos, RWF_DONTCACHE)
            except OSError:
                fallback = True
                continue
        else:
            n = os.preadv(fd, [buf], pos)
        if how == "pread + FADV_DONTNEED":
            os.posix_fadvise(fd, pos, n, os.POSIX_FADV_DONTNEED)
        if n <= 0:
            break
        pos += n
    os.close(fd)
    return pos, fallback


def main():
    d, cg_mem, cg_blk, hot_mib, cold_mib = sys.argv[1:6]
    for cg in (cg_mem, cg_blk):
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    hot, cold = os.path.join(d, "hot"), os.path.join(d, "cold")
    block = os.urandom(CHUNK)
    for path, mib in ((hot, int(hot_mib)), (cold, int(cold_mib))):
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
    print(f"{'method':28} {'cold MB/s':>10} {'hot resident after':>19} {'cold resident after':>20}")
    for how in ["pread (buffered, baseline)", "pread + FADV_SEQUENTIAL", "pread + FADV_DONTNEED",
                "preadv2(RWF_DONTCACHE)", "O_DIRECT"]:
        drop(cold)
        drop(hot)
        for _ in range(2):
            read_all(hot, "warm")
        t0 = time.monotonic()
        n, fell_back = read_all(cold, how)
        secs = time.monotonic() - t0
        note = " (fell back)" if fell_back else ""
        print(f"{how + note:28} {n / secs / 1e6:10.1f} {resident_fraction(hot):19.2f}"
              f" {resident_fraction(cold):20.2f}", flush=True)
    os.remove(hot)
    os.remove(cold)


main()
