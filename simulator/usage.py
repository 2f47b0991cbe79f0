"""Synthetic usage series: every guest's and node's metrics as a pure function of time.

A value depends only on the seed, the guest's parameters and the absolute timestamp: noise
comes from a counter-based hash (splitmix64) of (seed, vmid, minute) instead of a stateful
random stream. So any window of any subset of guests can be regenerated on demand, in any
chunking or process, and always gives the same numbers: the RRD writer works chunk by chunk
in a process pool, tests regenerate the expected values, and ``advance`` extends the series.
All arrays are [guests or nodes, times]; nothing loops over time points in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
from numpy.typing import NDArray

from simulator.model import GIB, SIM_NOW, ClusterSpec

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

DAY = 86_400
COUNTER_ORIGIN = SIM_NOW - 1000 * DAY
"""Counters (DERIVE sources) count bytes since this instant, so they are positive and rising."""

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_T = np.uint64(0xC2B2AE3D27D4EB4F)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def hash_uniform(seed: int, keys: IntArray, ticks: IntArray, stream: int) -> FloatArray:
    """Uniform numbers in (0, 1) for every (key, tick) pair: [len(keys), len(ticks)]."""
    base = np.uint64((seed * 1_000_003 + stream * 7_919) & 0xFFFFFFFFFFFFFFFF)
    x = keys.astype(np.uint64)[:, None] * _GOLDEN + ticks.astype(np.uint64)[None, :] * _MIX_T
    x = x ^ base
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    x = x ^ (x >> np.uint64(31))
    out: FloatArray = ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return out


def hash_normal(seed: int, keys: IntArray, ticks: IntArray, stream: int) -> FloatArray:
    """Standard normal numbers (Box-Muller over two hash streams)."""
    u1 = hash_uniform(seed, keys, ticks, 2 * stream)
    u2 = hash_uniform(seed, keys, ticks, 2 * stream + 1)
    out: FloatArray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out


def _round(values: FloatArray, decimals: int) -> FloatArray:
    out: FloatArray = np.round(values, decimals)
    return out


def _diurnal(times: IntArray, peak_hour: FloatArray) -> FloatArray:
    """cos of the hour distance to each guest's peak: 1 at the peak, -1 twelve hours later."""
    hours = (times % DAY) / 3600.0
    out: FloatArray = np.cos(2.0 * np.pi * (hours[None, :] - peak_hour[:, None]) / 24.0)
    return out


def _counter(
    times: IntArray, rate: FloatArray, amp: FloatArray, peak_hour: FloatArray
) -> FloatArray:
    """Byte counter whose derivative is rate*(1 + amp*diurnal): rising, integral of the rate."""
    elapsed = (times - COUNTER_ORIGIN).astype(np.float64)
    phase = 2.0 * np.pi * ((times % DAY)[None, :] / 3600.0 - peak_hour[:, None]) / 24.0
    wave = (amp * rate)[:, None] * DAY / (2.0 * np.pi) * np.sin(phase)
    out: FloatArray = np.floor(rate[:, None] * elapsed[None, :] + wave)
    return out


@dataclass(frozen=True, slots=True)
class UsageParams:
    """Per-guest usage parameters, one array entry per guest (same order as the spec)."""

    vmid: IntArray
    ref_maxcpu: FloatArray
    """maxcpu on the initial node: cpu demand is drawn as a fraction of it."""
    static_maxcpu: FloatArray
    """Configured vCPUs, NaN for containers that may use all host cores."""
    cpulimit: FloatArray
    maxmem: FloatArray
    maxdisk: FloatArray
    disk_used: FloatArray
    is_vm: BoolArray
    cpu_base: FloatArray
    cpu_amp: FloatArray
    peak_hour: FloatArray
    cpu_noise: FloatArray
    spike_prob: FloatArray
    spike_height: FloatArray
    mem_base: FloatArray
    mem_amp: FloatArray
    mem_growth: FloatArray
    """Fraction of maxmem gained per day."""
    net_rate: FloatArray
    disk_rate: FloatArray

    def take(self, index: IntArray | slice) -> UsageParams:
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.vmid)


@dataclass(frozen=True, slots=True)
class NodeParams:
    key: IntArray
    maxcpu: FloatArray
    memtotal: FloatArray
    swaptotal: FloatArray
    roottotal: FloatArray
    host_cpu: FloatArray
    host_mem: FloatArray


def build_usage_params(spec: ClusterSpec) -> tuple[UsageParams, NodeParams]:
    """Draw usage parameters so the cluster sits around 35 % cpu and 50 % memory."""
    rng = np.random.default_rng([spec.seed, 1])
    node_cores = {n.name: n.cores for n in spec.nodes}
    guests = spec.guests
    count = len(guests)
    static = np.array(
        [g.maxcpu(0) if g.kind == "qemu" or g.cores is not None else np.nan for g in guests]
    )
    limit = np.array([g.cpulimit if g.cpulimit else np.inf for g in guests])
    ref = np.array([g.maxcpu(node_cores[g.node]) for g in guests])
    running = np.array([g.running for g in guests], dtype=bool)
    idle = rng.random(count) < 0.1
    total_cores = sum(n.cores for n in spec.nodes)
    demand = max(float(ref[running].sum()), 1.0)
    base = 0.35 * total_cores / demand * rng.lognormal(-0.3, 0.8, count)
    base = np.where(idle, 0.003, np.clip(base, 0.005, 0.85))
    guest_params = UsageParams(
        vmid=np.array([g.vmid for g in guests], dtype=np.int64),
        ref_maxcpu=ref,
        static_maxcpu=static,
        cpulimit=limit,
        maxmem=np.array([g.maxmem for g in guests], dtype=np.float64),
        maxdisk=np.array([g.maxdisk for g in guests], dtype=np.float64),
        disk_used=np.array(
            [g.maxdisk * 0.5 if g.kind == "lxc" else 0.0 for g in guests], dtype=np.float64
        ),
        is_vm=np.array([g.kind == "qemu" for g in guests], dtype=bool),
        cpu_base=base,
        cpu_amp=np.where(idle, 0.0, rng.uniform(0.1, 0.8, count)),
        peak_hour=rng.uniform(0.0, 24.0, count),
        cpu_noise=np.where(idle, 0.001, base * rng.uniform(0.05, 0.25, count)),
        spike_prob=np.where(idle, 0.0, rng.uniform(0.0, 0.02, count)),
        spike_height=rng.uniform(0.2, 0.7, count),
        mem_base=np.where(idle, 0.15, rng.uniform(0.3, 0.75, count)),
        mem_amp=np.where(idle, 0.0, rng.uniform(0.0, 0.08, count)),
        mem_growth=np.where(rng.random(count) < 0.3, rng.uniform(0.001, 0.02, count), 0.0),
        net_rate=np.where(idle, 100.0, rng.lognormal(10.5, 1.0, count)),
        disk_rate=np.where(idle, 50.0, rng.lognormal(10.0, 1.0, count)),
    )
    node_params = NodeParams(
        key=np.arange(len(spec.nodes), dtype=np.int64) + 10_000_000,
        maxcpu=np.array([n.cores for n in spec.nodes], dtype=np.float64),
        memtotal=np.array([n.memtotal for n in spec.nodes], dtype=np.float64),
        swaptotal=np.array([n.swaptotal for n in spec.nodes], dtype=np.float64),
        roottotal=np.array([n.roottotal for n in spec.nodes], dtype=np.float64),
        host_cpu=np.array([n.host_cpu for n in spec.nodes], dtype=np.float64),
        host_mem=np.array([n.host_mem for n in spec.nodes], dtype=np.float64),
    )
    return guest_params, node_params


@dataclass(slots=True)
class GuestSeries:
    """One window of guest metrics, [guests, times]; NaN marks unknown (stopped guest)."""

    columns: dict[str, FloatArray]
    cores: FloatArray
    """Cores in use (0 when stopped): what the node sums add up."""
    mem_bytes: FloatArray
    """Memory in use (0 when stopped)."""


def guest_series(
    seed: int,
    params: UsageParams,
    times: IntArray,
    node_index: IntArray,
    running: BoolArray,
    node_cores: FloatArray,
) -> GuestSeries:
    """All guest data sources for ``times``; ``node_index``/``running`` are [guests, times]."""
    keys = params.vmid
    diurnal = _diurnal(times, params.peak_hour)
    minutes = times // 60
    spike_on = hash_uniform(seed, keys, times // 600, 11) < params.spike_prob[:, None]
    frac_ref = (
        params.cpu_base[:, None] * (1.0 + params.cpu_amp[:, None] * diurnal)
        + params.cpu_noise[:, None] * hash_normal(seed, keys, minutes, 1)
        + np.where(spike_on, params.spike_height[:, None], 0.0)
    )
    demand = np.clip(frac_ref, 0.0, 1.0) * params.ref_maxcpu[:, None]
    maxcpu = np.where(
        np.isnan(params.static_maxcpu)[:, None],
        node_cores[node_index],
        params.static_maxcpu[:, None],
    )
    maxcpu = np.minimum(maxcpu, params.cpulimit[:, None])
    cores = np.where(running, np.minimum(demand, maxcpu), 0.0)
    cpu = np.where(running, cores / maxcpu, np.nan)

    days_from_now = (times - SIM_NOW) / DAY
    mem_frac = np.clip(
        params.mem_base[:, None]
        + params.mem_amp[:, None] * diurnal
        + params.mem_growth[:, None] * days_from_now[None, :]
        + 0.01 * hash_normal(seed, keys, minutes, 2),
        0.02,
        0.98,
    )
    maxmem = np.broadcast_to(params.maxmem[:, None], cpu.shape)
    mem_bytes = np.where(running, np.floor(mem_frac * maxmem), 0.0)
    mem = np.where(running, mem_bytes, np.nan)
    memhost = np.where(
        params.is_vm[:, None], np.minimum(mem + 0.03 * maxmem + 64 * 2**20, 1.05 * maxmem), mem
    )

    amp = np.minimum(params.cpu_amp, 0.9)
    unknown = np.where(running, 0.0, np.nan)
    counters = {
        "netin": _counter(times, params.net_rate, amp, params.peak_hour),
        "netout": _counter(times, 0.6 * params.net_rate, amp, params.peak_hour),
        "diskread": _counter(times, 0.5 * params.disk_rate, amp, params.peak_hour),
        "diskwrite": _counter(times, params.disk_rate, amp, params.peak_hour),
    }
    cpu_some = _round(np.clip((cpu - 0.6) * 150.0, 0.0, 100.0), 2)
    mem_some = _round(np.clip((mem_frac - 0.9) * 400.0, 0.0, 100.0), 2) + unknown
    io_some = _round(0.5 * hash_uniform(seed, keys, minutes, 3), 2) + unknown
    columns: dict[str, FloatArray] = {
        "maxcpu": maxcpu,
        "cpu": cpu,
        "maxmem": maxmem,
        "mem": mem,
        "maxdisk": np.broadcast_to(params.maxdisk[:, None], cpu.shape),
        "disk": np.broadcast_to(params.disk_used[:, None], cpu.shape),
        **{name: values + unknown for name, values in counters.items()},
        "memhost": memhost,
        "pressurecpusome": cpu_some,
        "pressurecpufull": _round(0.3 * cpu_some, 2),
        "pressureiosome": io_some,
        "pressureiofull": _round(0.4 * io_some, 2),
        "pressurememorysome": mem_some,
        "pressurememoryfull": _round(0.5 * mem_some, 2),
    }
    return GuestSeries(columns, cores, mem_bytes)


def node_sums(node_index: IntArray, values: FloatArray, node_count: int) -> FloatArray:
    """Sum [guests, times] values per node: [nodes, times] (vectorised with bincount)."""
    steps = values.shape[1]
    flat = node_index.astype(np.int64) * steps + np.arange(steps, dtype=np.int64)[None, :]
    sums = np.bincount(flat.ravel(), weights=values.ravel(), minlength=node_count * steps)
    out: FloatArray = sums.astype(np.float64, copy=False).reshape(node_count, steps)
    return out


def node_series(
    seed: int, params: NodeParams, times: IntArray, guest_cores: FloatArray, guest_mem: FloatArray
) -> dict[str, FloatArray]:
    """All node data sources: host overhead plus the sums of the node's running guests."""
    minutes = times // 60
    host_cores = params.host_cpu[:, None] * (
        1.0 + 0.2 * np.abs(hash_normal(seed, params.key, minutes, 4))
    )
    cores = host_cores + guest_cores
    maxcpu = np.broadcast_to(params.maxcpu[:, None], cores.shape)
    cpu = np.minimum(cores / maxcpu, 1.0)
    memtotal = np.broadcast_to(params.memtotal[:, None], cores.shape)
    memused = np.minimum(params.host_mem[:, None] + guest_mem, memtotal)
    swaptotal = np.broadcast_to(params.swaptotal[:, None], cores.shape)
    swapused = np.floor(np.clip((memused / memtotal - 0.85) * 4.0, 0.0, 0.5) * swaptotal)
    roottotal = np.broadcast_to(params.roottotal[:, None], cores.shape)
    rootused = np.floor(roottotal * (0.2 + 0.001 * (times - SIM_NOW)[None, :] / DAY)).clip(0)
    zero = np.zeros(len(params.key))
    rate = 5e4 * params.maxcpu
    peak = np.full(len(params.key), 14.0)
    cpu_some = _round(np.clip((cpu - 0.7) * 200.0, 0.0, 100.0), 2)
    mem_some = _round(np.clip((memused / memtotal - 0.9) * 400.0, 0.0, 100.0), 2)
    io_some = _round(0.3 * hash_uniform(seed, params.key, minutes, 5), 2)
    return {
        "loadavg": _round(cores * 1.05, 2),
        "maxcpu": maxcpu,
        "cpu": cpu,
        "iowait": _round(0.002 + 0.01 * cpu, 5),
        "memtotal": memtotal,
        "memused": memused,
        "swaptotal": swaptotal,
        "swapused": swapused,
        "roottotal": roottotal,
        "rootused": rootused,
        "netin": _counter(times, rate, zero + 0.5, peak),
        "netout": _counter(times, 0.7 * rate, zero + 0.5, peak),
        "memavailable": memtotal - memused,
        "arcsize": np.zeros_like(cpu),
        "pressurecpusome": cpu_some,
        "pressureiosome": io_some,
        "pressureiofull": _round(0.4 * io_some, 2),
        "pressurememorysome": mem_some,
        "pressurememoryfull": _round(0.5 * mem_some, 2),
    }


def storage_series(
    totals: FloatArray, base_used: FloatArray, times: IntArray
) -> dict[str, FloatArray]:
    """Storage total and used bytes, used growing slowly (0.1 % of total a day)."""
    total = np.broadcast_to(totals[:, None], (len(totals), len(times)))
    grown = base_used[:, None] + 0.001 * totals[:, None] * ((times - SIM_NOW) / DAY)[None, :]
    used = np.floor(np.clip(grown, 0.0, total))
    return {"total": np.asarray(total, dtype=np.float64), "used": used}


STORAGE_TOTALS = {"local": 100 * GIB, "local-lvm": 4 * 1024 * GIB, "ceph-vm": 100 * 1024 * GIB}
