"""Which layers each pipeline rank holds: contiguous groups balanced by parameter count."""

from __future__ import annotations

from localearn.errors import ConfigError


def split_layers(sizes: list[int], world: int, explicit: str | None = None) -> list[range]:
    """Contiguous groups of chain positions, one per rank (a position is a layer, or layers that
    live together such as CaFo's block k and predictor k).

    Args:
        sizes: each position's parameter count.
        world: the number of ranks.
        explicit: ``"2,1,1"``: how many positions each rank holds (must cover every one); None
            chooses the split whose largest group has the fewest parameters (ties: the earliest
            cut points), found exactly by dynamic programming over the L-1 cut positions.
    """
    n = len(sizes)
    if world > n:
        raise ConfigError(f"{world} pipeline ranks but only {n} layers (chain positions) to place: "
                          f"use at most {n} ranks")
    if explicit:
        try:
            counts = [int(c) for c in explicit.split(",")]
        except ValueError:
            raise ConfigError(f"--split {explicit!r}: expected layer (chain position) counts per rank, "
                              "e.g. 2,2") from None
        if len(counts) != world or sum(counts) != n or min(counts) < 1:
            raise ConfigError(f"--split {explicit!r} must give {world} positive counts summing to {n} "
                              "layers (chain positions)")
        return _ranges(counts)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    inf = float("inf")
    # best[k][j]: the smallest possible largest group when the first j layers form k groups.
    best = [[inf] * (n + 1) for _ in range(world + 1)]
    cut = [[0] * (n + 1) for _ in range(world + 1)]
    best[0][0] = 0
    for k in range(1, world + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                cost = max(best[k - 1][i], prefix[j] - prefix[i])
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    counts, j = [], n
    for k in range(world, 0, -1):
        i = cut[k][j]
        counts.append(j - i)
        j = i
    return _ranges(counts[::-1])


def _ranges(counts: list[int]) -> list[range]:
    out, start = [], 0
    for c in counts:
        out.append(range(start, start + c))
        start += c
    return out
