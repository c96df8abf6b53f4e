"""Vigil's kernel boundary: libbpf binding, BTF reading, object loading, mounts, feature probes.

Owns everything that talks to the kernel's BPF subsystem. Does not own event decoding
(vigil.events), policy, or the BPF C sources (bpf/).
"""
